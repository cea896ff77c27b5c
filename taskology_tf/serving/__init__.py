"""Exporting trained task networks as versioned SavedModels (and, later, serving them)."""
