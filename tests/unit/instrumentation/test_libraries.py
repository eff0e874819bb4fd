"""What every library instrumentor (XGBoost, LightGBM, ONNX Runtime) must do alike: patch only once the library is
imported (instrumenting never imports it), and be declared as an ``opentelemetry_instrumentor`` entry point."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

# module: (instrumentor class, the attributes a later import of the module patches)
LIBRARIES = {
    "xgboost": (
        "XGBoostInstrumentor",
        [
            "Booster.inplace_predict",
            "Booster.predict",
            "XGBClassifier.predict",
            "XGBClassifier.predict_proba",
            "XGBModel.predict",
            "XGBRanker.predict",
        ],
    ),
    "lightgbm": (
        "LightGBMInstrumentor",
        ["Booster.predict", "LGBMClassifier.predict", "LGBMClassifier.predict_proba", "LGBMModel.predict"],
    ),
    "onnxruntime": ("OnnxRuntimeInstrumentor", ["Session.run"]),
}

_LATER_IMPORT = """
import sys
from otel_ml.instrumentation.{module} import {cls}, patched
{cls}().instrument()
assert "{module}" not in sys.modules  # instrumenting does not import the library
import {module}
print(sorted(f"{{owner.__name__}}.{{name}}" for owner, name in patched()))
"""


@pytest.mark.parametrize("module", sorted(LIBRARIES))
def test_a_library_imported_after_instrumenting_is_patched(module: str) -> None:
    cls, expected = LIBRARIES[module]
    code = textwrap.dedent(_LATER_IMPORT.format(module=module, cls=cls))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=True)
    assert out.stdout.decode().strip() == str(sorted(expected))


@pytest.mark.parametrize("module", sorted(LIBRARIES))
def test_entry_point_and_dependencies_in_pyproject(module: str) -> None:
    cls = LIBRARIES[module][0]
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["opentelemetry_instrumentor"][module] == f"otel_ml.instrumentation.{module}:{cls}"
    instrumentor = getattr(importlib.import_module(f"otel_ml.instrumentation.{module}"), cls)()
    assert set(instrumentor.instrumentation_dependencies()) <= set(project["optional-dependencies"]["instruments-any"])
