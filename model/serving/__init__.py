"""Predictions to people: the HTTP service, its web UI and per-source profiles."""
