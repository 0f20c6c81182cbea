"""Hidden checks of day 1."""
