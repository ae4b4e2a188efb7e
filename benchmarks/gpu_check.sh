#!/usr/bin/env bash
# GPU check of isograd (see benchmarks/gpu_check.py): exactness in bf16, speed and memory of a
# ~1B-parameter random Llama at B=16, T=256, and lm.score end to end. Needs only torch and
# transformers; no network. Writes one JSON (--out PATH, else $OUT/gpu_check.json, else
# results/bench/gpu/gpu_check.json) and exits non-zero when a check fails.
#   benchmarks/gpu_check.sh                                   # on cuda, < 8 minutes
#   benchmarks/gpu_check.sh --device cpu --out /tmp/g.json    # dry run, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
