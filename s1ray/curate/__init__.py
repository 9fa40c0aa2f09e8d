"""Curation: rule stages, model scoring stages, selection."""
