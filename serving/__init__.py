"""Serving the pushed models (see the serving issue)."""
