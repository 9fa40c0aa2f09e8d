"""s1ray."""
