#!/usr/bin/env bash
# GPU smoke check, no network needed: tools/gpu_check.py (options pass through; --help).
# Interpreter: $PYTHON, else the checkout's .venv, else python3 (whatever torch it has).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
cd "$ROOT"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" tools/gpu_check.py "$@"
