"""otel-ml: OpenTelemetry instrumentation for machine-learning models.

The whole public API::

    otel_ml.configure(service_name=...)            # optional: SDK providers + OTLP export
    @otel_ml.instrument(name=..., version=...)     # decorate a predict function (sync or async)
    otel_ml.instrument_model(model, name=..., version=...)   # instrument one model object
    otel_ml.uninstrument_model(model)
    otel_ml.last_prediction_id()                   # ml.prediction.id of the latest call here
    otel_ml.set_model_info(model, name=..., version=...)     # name a model the auto-instrumentors measure
    otel_ml.Reference.from_data(X_train) / .save(path) / .load(path)   # what drift is measured against
    otel_ml.force_flush(timeout=...) / otel_ml.shutdown(timeout=...)
    otel_ml.record_outcome(prediction_id, actual, model=..., version=..., predicted=...)   # delayed labels
    otel_ml.shadow(primary, candidate, sample=...)   # serve primary, compare a candidate in the background
"""

from otel_ml._core.monitor import DriftEvent, MonitorOptions
from otel_ml._core.recorder import last_prediction_id
from otel_ml._core.setup import configure, force_flush, shutdown
from otel_ml.instrumentation.decorator import instrument
from otel_ml.instrumentation.model import instrument_model, uninstrument_model
from otel_ml.instrumentation.registry import set_model_info
from otel_ml.outcome import record_outcome
from otel_ml.shadow import shadow
from otel_ml.sketch.reference import Reference
from otel_ml.version import __version__

__all__ = [
    "DriftEvent",
    "MonitorOptions",
    "Reference",
    "__version__",
    "configure",
    "force_flush",
    "instrument",
    "instrument_model",
    "last_prediction_id",
    "record_outcome",
    "set_model_info",
    "shadow",
    "shutdown",
    "uninstrument_model",
]
