"""Batch prediction spread over a Ray cluster."""
