"""Hidden checks of day 2."""
