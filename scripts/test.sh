#!/usr/bin/env bash
# Installs everything the test suite needs into ./.venv, then runs ruff (lint and format), mypy and the whole pytest
# suite.
# Used as-is by README ("run the tests") and by .ci/run (with CI=true: integration tests may not skip).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch is pinned: the CPU build of 2.13.0 is what CI has; an open range would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 'torch==2.13.0' 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import otel_ml, sklearn, torch, rotel" # fail early and clearly if an install step failed
# Real components the integration tests run: Prometheus + promtool (Debian), @grafana/schema + typescript (npm).
bash scripts/install-test-tools.sh

.venv/bin/ruff check otel_ml tests bench examples
.venv/bin/ruff format --check otel_ml tests bench examples
.venv/bin/mypy otel_ml
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
