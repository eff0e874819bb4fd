"""Runnable otel-ml examples (a package so ``uvicorn examples.service.app:app`` imports from the repo root)."""
