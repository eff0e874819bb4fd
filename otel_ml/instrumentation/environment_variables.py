"""Every ``OTEL_ML_*`` variable the auto-instrumentors read, each documented where defined.

They are read once, when ``instrument()`` runs (``opentelemetry-instrument`` calls it at start-up); keyword
arguments of ``instrument()`` win over them. Booleans accept ``true/false/1/0/yes/no/on/off``; an unreadable
value falls back to the default with one warning. otel-ml's general variables (``OTEL_ML_DISABLED``,
``OTEL_ML_SKETCH_INPUTS`` …) are in :mod:`otel_ml.config` and apply here as well.
"""

OTEL_ML_SKLEARN_ENABLED = "OTEL_ML_SKLEARN_ENABLED"
"""``false`` makes ``SklearnInstrumentor().instrument()`` a no-op (default ``true``)."""

OTEL_ML_TORCH_ENABLED = "OTEL_ML_TORCH_ENABLED"
"""``false`` makes ``TorchInstrumentor().instrument()`` a no-op (default ``true``)."""

OTEL_ML_XGBOOST_ENABLED = "OTEL_ML_XGBOOST_ENABLED"
"""``false`` makes ``XGBoostInstrumentor().instrument()`` a no-op (default ``true``)."""

OTEL_ML_LIGHTGBM_ENABLED = "OTEL_ML_LIGHTGBM_ENABLED"
"""``false`` makes ``LightGBMInstrumentor().instrument()`` a no-op (default ``true``)."""

OTEL_ML_ONNXRUNTIME_ENABLED = "OTEL_ML_ONNXRUNTIME_ENABLED"
"""``false`` makes ``OnnxRuntimeInstrumentor().instrument()`` a no-op (default ``true``)."""

OTEL_ML_SKLEARN_STEP_SPANS = "OTEL_ML_SKLEARN_STEP_SPANS"
"""``true`` adds one child span per Pipeline step (``transform scaler``, ``predict clf``) under the Pipeline's
predict span (default ``false``). The steps never get metrics of their own: the Pipeline's call is the
prediction."""

OTEL_ML_MODEL_NAMES = "OTEL_ML_MODEL_NAMES"
"""Model name and version by class name, comma-separated ``Class=name[:version]`` items, e.g.
``RandomForestClassifier=fraud:1.4.0,MLP=digits``. For a Pipeline the Pipeline's class and then its final
step's class are looked up. ``otel_ml.set_model_info`` and ``ml_model_name``/``ml_model_version`` attributes on
the model win over this mapping."""

OTEL_ML_MODEL_REFERENCES = "OTEL_ML_MODEL_REFERENCES"
"""Reference profiles (``otel_ml.Reference.save`` JSON files) drift is measured against, comma-separated
``model=path`` items; ``model`` is the resolved model name or the class name, e.g.
``fraud=/srv/models/fraud-ref.json``. A file that cannot be read is logged once and the model falls back to a
warm-up reference."""

OTEL_ML_TORCH_MODELS = "OTEL_ML_TORCH_MODELS"
"""Allow-list of ``nn.Module`` class names whose calls are predictions, comma-separated (default: every
outermost module call in eval mode). Other modules pass through untouched, so their submodules can still be
counted when they are on the list."""

OTEL_ML_TORCH_OUTPUT = "OTEL_ML_TORCH_OUTPUT"
"""How torch outputs are read by default (``otel_ml.set_model_info(model, output=..., task=...)`` wins per model):
``logits`` (the default: softmax over classes, sigmoid for one output column), ``proba`` (the model ends in a
softmax), ``log_proba``, ``labels``, ``regression``, ``none`` (no confidence), or ``auto`` (N x k floats summing
to 1 are probabilities, other N x k floats logits, N or N x 1 floats regression values; about 25 us more per
call for that check)."""

OTEL_ML_TORCH_COUNT_TRAINING = "OTEL_ML_TORCH_COUNT_TRAINING"
"""``true`` also counts forwards of modules in training mode (default ``false``: only ``model.eval()``
modules are predictions)."""

OTEL_ML_TORCH_COPY_DEVICE_INPUTS = "OTEL_ML_TORCH_COPY_DEVICE_INPUTS"
"""``true`` lets input sketching copy what it needs of a CUDA/MPS input to the host (the N x F matrix, or the N x C
per-channel means of an image batch); by default device inputs are not sketched (counted as dropped,
``reason=input_device``) and nothing is copied off the device."""
