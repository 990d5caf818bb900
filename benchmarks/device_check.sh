#!/usr/bin/env bash
# The device check, in one command, for the first GPU or TPU at hand (benchmarks/device_check.py
# says what it measures). Usage, from anywhere, with the package installed:
#   benchmarks/device_check.sh          # on the accelerator: about 5-8 minutes on one GPU (estimated)
#   benchmarks/device_check.sh --tiny   # every section at minute size (the tests run this on CPU)
# Environment: PYTHON, the interpreter (default: the active virtual environment's, else the
# README's .venv beside this script, else python3).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=launch/python.sh
source "$repo/launch/python.sh"
python=$(muscle_python "$repo")
cd "$repo"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$python" benchmarks/device_check.py "$@"
