"""The library versions each auto-instrumentor supports (read by ``instrumentation_dependencies()``)."""

_instruments_sklearn = ("scikit-learn >= 1.3",)
_instruments_torch = ("torch >= 2.0",)
# The builds of one library, each its own distribution: any one of them in range will do.
_instruments_xgboost = ("xgboost >= 2.0", "xgboost-cpu >= 2.1")
_instruments_lightgbm = ("lightgbm >= 4.0",)
_instruments_onnxruntime = ("onnxruntime >= 1.16", "onnxruntime-gpu >= 1.16", "onnxruntime-openvino >= 1.16")
