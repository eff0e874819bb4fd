"""``otel_ml.configure()`` under whatever environment the test gives, then predictions; prints one JSON line.

Scenario 22 (bad configuration). Every log record (any logger, WARNING and up) and every Python warning is
collected, so the test can count the warnings per variable. ``import otel_ml`` and ``configure`` either succeed
or fail: a failure is reported (its type and message) and the predictions run afterwards all the same (when
otel-ml could be imported), each one guarded so an exception reaching the caller is counted rather than crashing
the app. The effective settings (otel-ml's own, and those of the pipeline ``configure`` built) are printed so
the test can check the fallbacks; a ``SummaryReader`` beside the exporters counts the rows predicted.

``RELIABILITY_CONFIG`` (JSON): ``predictions`` (default 200), ``shutdown_timeout`` (default 2), ``in_memory``
(spans to an ``InMemorySpanExporter`` instead of OTLP), ``auto`` (also ``SklearnInstrumentor`` and
``TorchInstrumentor``, and a scikit-learn model predicting each iteration).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from typing import Any


class _Collect(logging.Handler):
    """Every record, stamped with the phase of the app it was logged in."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[dict[str, str]] = []
        self.phase = "import"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep the template
            message = str(record.msg)
        self.records.append({"phase": self.phase, "level": record.levelname, "logger": record.name, "message": message})


collect = _Collect()
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(created).3f %(levelname)s %(name)s %(message)s")
logging.getLogger().addHandler(collect)
logging.captureWarnings(True)  # warnings.warn(...) become records of the "py.warnings" logger
warnings.simplefilter("default")


def _pipeline_settings() -> dict[str, Any]:
    from otel_ml._core import setup

    pipeline = setup.current()
    if pipeline is None:
        return {}
    out: dict[str, Any] = {
        "owns_tracer_provider": pipeline.owns_tracer_provider,
        "owns_meter_provider": pipeline.owns_meter_provider,
        "span_queue_capacity": pipeline.ledger.capacity if pipeline.ledger is not None else None,
        "metric_interval_ms": [er.reader._export_interval_millis for er in pipeline.exporting_readers],
    }
    if pipeline.span_exporter is not None:
        inner = pipeline.span_exporter._inner
        out["span_exporter"] = f"{type(inner).__module__}.{type(inner).__name__}"
        timeout = getattr(inner, "_timeout", None)
        out["span_exporter_timeout_s"] = timeout
    processors = getattr(getattr(pipeline.tracer_provider, "_active_span_processor", None), "_span_processors", ())
    for p in processors:
        bsp = getattr(getattr(p, "_inner", None), "_batch_processor", None)
        if bsp is not None:
            out["bsp"] = {
                "max_queue_size": bsp._max_queue_size,
                "schedule_delay_s": bsp._schedule_delay,
                "max_export_batch_size": bsp._max_export_batch_size,
            }
    return out


def main() -> int:
    cfg = json.loads(os.environ.get("RELIABILITY_CONFIG", "{}"))
    n = int(cfg.get("predictions", 200))
    timeout = float(cfg.get("shutdown_timeout", 2))
    try:
        import otel_ml
    except Exception as exc:  # the SDK validates some variables when it is imported
        print(json.dumps({"import_error": {"type": type(exc).__name__, "message": str(exc)}}), flush=True)
        return 0
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_ml import config
    from otel_ml._core import guard, setup
    from otel_ml.summary import SummaryReader

    collect.phase = "setup"  # the app's own objects (a SummaryReader reads OTEL_RESOURCE_ATTRIBUTES too)
    reader = SummaryReader()
    memory = InMemorySpanExporter() if cfg.get("in_memory") else None
    collect.phase = "configure"
    t0 = time.perf_counter()
    configure_error: dict[str, str] | None = None
    try:
        otel_ml.configure(service_name="config", span_exporter=memory, metric_readers=[reader])
    except Exception as exc:  # a fail-fast error: reported, then the predictions run anyway
        configure_error = {"type": type(exc).__name__, "message": str(exc)}
    configure_s = time.perf_counter() - t0
    collect.phase = "instrument"

    @otel_ml.instrument(name="config-fn", version="1")
    def predict(rows: list[list[float]]) -> list[int]:
        return [int(sum(r) > 0) for r in rows]

    class Model:
        def predict_proba(self, rows: list[list[float]]) -> list[list[float]]:
            return [[0.25, 0.75] for _ in rows]

    model = otel_ml.instrument_model(Model(), name="config-obj", version="1")

    @otel_ml.instrument(name="config-raises")
    def raises(rows: list[list[float]]) -> None:
        raise KeyError("model error")

    rows = [[0.5, -0.25, 1.0], [-1.0, -2.0, 0.5]]
    auto_predict: Any = None
    if cfg.get("auto"):
        from otel_ml.instrumentation.sklearn import SklearnInstrumentor
        from otel_ml.instrumentation.torch import TorchInstrumentor

        SklearnInstrumentor().instrument()
        TorchInstrumentor().instrument()  # torch is not imported: only its variables are read
        from sklearn.linear_model import LogisticRegression

        x = [[float(i % 7) - 3, float(i % 5) - 2, float(i % 3) - 1] for i in range(60)]
        clf = LogisticRegression().fit(x, [int(r[0] > 0) for r in x])
        expected_auto = clf.predict(rows).tolist()  # one prediction, counted
        auto_predict = lambda: clf.predict(rows).tolist() != expected_auto  # noqa: E731

    caller_errors: list[str] = []
    user_errors = 0
    wrong_results = 0
    collect.phase = "predict"
    t1 = time.perf_counter()
    for i in range(n):
        try:
            wrong_results += predict(rows) != [1, 0]
            wrong_results += model.predict_proba(rows) != [[0.25, 0.75], [0.25, 0.75]]
            if auto_predict is not None:
                wrong_results += auto_predict()
        except Exception as exc:
            caller_errors.append(f"{type(exc).__name__}: {exc}")
        if i % 10 == 0:
            try:
                raises(rows)
            except KeyError:
                user_errors += 1
            except Exception as exc:
                caller_errors.append(f"{type(exc).__name__}: {exc}")
    predict_s = time.perf_counter() - t1
    collect.phase = "shutdown"
    flush_ok = shutdown_ok = None
    pipeline: dict[str, Any] = {}
    ledger = None
    rows_counted = None
    try:
        flush_ok = otel_ml.force_flush(timeout=timeout)
        pipeline = _pipeline_settings()
        ledger = setup.span_ledger()
        counted = reader.collect_metrics().get("ml.prediction.count")
        rows_counted = {}
        for point in counted.data.data_points if counted is not None else []:
            name = str(point.attributes.get("ml.model.name"))
            rows_counted[name] = rows_counted.get(name, 0) + int(point.value)
        shutdown_ok = otel_ml.shutdown(timeout=timeout)
    except Exception as exc:
        caller_errors.append(f"flush/shutdown {type(exc).__name__}: {exc}")
    result = {
        "import_error": None,
        "configure_error": configure_error,
        "configure_s": configure_s,
        "predict_s": predict_s,
        "predictions": n,
        "caller_errors": caller_errors[:20],
        "caller_error_count": len(caller_errors),
        "user_errors": user_errors,
        "wrong_results": wrong_results,
        "internal_errors": guard.error_counts(),
        "settings": dataclasses.asdict(config.settings),
        "pipeline": pipeline,
        "ledger": ledger,
        "spans_in_memory": len(memory.get_finished_spans()) if memory is not None else None,
        "rows_counted": rows_counted,
        "flush_ok": flush_ok,
        "shutdown_ok": shutdown_ok,
        "records": collect.records,
    }
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
