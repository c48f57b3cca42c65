#!/usr/bin/env bash
# Mutation testing (mutmut) of the modules that compute reported numbers; config: [tool.mutmut] in
# pyproject.toml. Prints killed / total and lists the survivors (inspect one: mutmut show NAME).
# Not part of CI: a full run takes tens of minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: torch's OpenMP workers spin, and mutmut limits CPU time, so they read as timeouts.
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg HYPOTHESIS_PROFILE=mutation OMP_NUM_THREADS=1
python -m pip install --quiet --disable-pip-version-check mutmut
rm -rf mutants
mutmut run "$@" || true
mutmut results --all true > mutants/results.txt || true
python - <<'PY'
from collections import Counter
lines = [l.strip() for l in open("mutants/results.txt") if ":" in l]
status = Counter(l.rsplit(":", 1)[1].strip() for l in lines)
total = sum(status.values())
print(f"mutants: {total}; " + ", ".join(f"{k}: {v}" for k, v in sorted(status.items())))
for l in lines:
    if l.rsplit(":", 1)[1].strip() not in ("killed", "timeout"):
        print("  " + l)
PY
