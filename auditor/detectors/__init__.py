"""Detectors: one module each. ``registry.all_detectors()`` lists them."""
