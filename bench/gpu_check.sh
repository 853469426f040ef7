#!/usr/bin/env bash
# One-GPU check of colmed in under 10 minutes: PLAID and dense index + search on NFCorpus, faiss flat search,
# a few bf16 training steps of both families, LLM generation (vLLM where it imports). All figures go to
# $OUT/gpu_check.md and $OUT/gpu_check.json (+ gpu_check.log); each step is time-boxed and a failure is
# recorded, not fatal. See bench/gpu_check.py for the steps.
#
#   here (PyPI reachable), once:  python bench/gpu_check.py prepare      # .whl/ + runs/gpu-assets/ (~36 MiB)
#   on the GPU machine:           bash bench/gpu_check.sh                # carry: .whl, runs/gpu-assets
#   plumbing check on a CPU:      bash bench/gpu_check.sh --cpu-smoke --out runs/gpu-check-smoke
#
# The device machine reaches no registry: colmed's missing dependencies come from the carried .whl/ and are
# installed into a scratch folder; colmed itself is installed from this tree. Anything that still cannot
# import is reported by the env step and the steps that need it fail with their log tail in the report.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 GIT_PYTHON_REFRESH=quiet HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--prepare" ]; then shift; exec "$PY" bench/gpu_check.py prepare "$@"; fi

RESULTS=${OUT:-runs/gpu-check}
mkdir -p "$RESULTS"
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('colmed', 'colbert', 'faiss', 'bm25s', 'ranx', 'datasets')))" >/dev/null 2>&1; then
  SITE=${GPU_CHECK_SITE:-/tmp/colmed-gpu-check-site}
  t0=$(date +%s)
  {
    if ls .whl/*.whl >/dev/null 2>&1; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
        || echo "gpu_check.sh: installing the carried wheels failed"
    else
      echo "gpu_check.sh: no .whl/ here: colmed's dependencies missing on this machine stay missing"
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" . \
      || echo "gpu_check.sh: installing colmed from this tree failed"
  } > "$RESULTS/install.log" 2>&1
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed into $SITE in $(( $(date +%s) - t0 )) s (log: $RESULTS/install.log)"
fi
exec "$PY" bench/gpu_check.py run --out "$RESULTS" "$@"
