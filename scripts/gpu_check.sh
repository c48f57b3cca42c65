#!/usr/bin/env bash
# The prepared GPU check: one call on a lent GPU machine, about 9 minutes on an H200.
#
#   bash scripts/gpu_check.sh OUT_DIR          # on the GPU machine, from the repository root
#   QUICK=1 bash scripts/gpu_check.sh /tmp/o   # a smoke run of the same steps on a CPU
#
# Steps: the fused kme_rbf kernel against the PyTorch path on the GPU (tests), bench.tools.perf at COCO
# size (ratios time_kme_rbf_over_matmul, time_kme_rff_over_cosine, time_reference_over_fused_kme_rbf), bench.tools.perf_extraction
# (time_clip_benchmark_over_ours on ViT-B-32), bench.tools.encoder_speed (a training step at batch 256 with
# train.encoder frozen, last_blocks:1 and last_blocks:2 on ViT-B-32, and peak memory), and bench.tools.e2e_check
# (the retrieval suite end to end). Each step
# has its own time limit, so one slow step cannot take the others' figures with it.
# Machines without open_clip / clip_benchmark: carry wheels in .whl/ (see README, "Speed").
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PYTHON:-python3}
if [ "${QUICK:-0}" = 1 ]; then
  PERF=(--quick --repeats 1) EXTRACT=(--images 16 --batch 8 --workers 0 --rounds 1) E2E=(--images 16 --steps 3 --workers 0)
  ENCODER=(--batch 16 --steps 1)
  TESTS=(tests/test_kme_rbf_fused.py)
else
  PERF=() EXTRACT=(--images 2000 --batch 256 --workers 12) E2E=(--images 2000 --workers 12)
  ENCODER=(--batch 256 --steps 5)
  TESTS=(tests/test_kme_rbf_fused.py tests/test_heads.py)
fi
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/machine.txt" 2>&1
status=0
step() {  # step NAME SECONDS COMMAND...: log to OUT/NAME.log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || { echo "   $name failed (rc $?): see $OUT/$name.log" >&2; status=1; }
  tail -n 3 "$OUT/$name.log" >&2
}
step tests 150 $PY -m pytest -q -p no:cacheprovider "${TESTS[@]}"
step perf 200 $PY -m bench.tools.perf "${PERF[@]}" --json "$OUT/perf.json" --out /tmp/simbench-perf
step extraction 150 $PY -m bench.tools.perf_extraction "${EXTRACT[@]}" --json "$OUT/extraction.json"
step encoder 150 $PY -m bench.tools.encoder_speed "${ENCODER[@]}" --json "$OUT/encoder.json"
step e2e 200 $PY -m bench.tools.e2e_check "${E2E[@]}" --json "$OUT/e2e.json"
exit $status
