"""Built-in twins of the course's sample apps: what a simulated container image runs."""
