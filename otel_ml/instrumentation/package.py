"""The library versions each auto-instrumentor supports (read by ``instrumentation_dependencies()``)."""

_instruments_sklearn = ("scikit-learn >= 1.3",)
_instruments_torch = ("torch >= 2.0",)
