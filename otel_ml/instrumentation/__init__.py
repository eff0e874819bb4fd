"""Adapters: the decorator, the model wrapper, and per-framework auto-instrumentors."""
