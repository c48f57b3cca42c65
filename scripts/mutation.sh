#!/usr/bin/env bash
# Mutation testing (mutmut). Two sets:
#   bash scripts/mutation.sh [--fresh]        the modules that compute reported numbers ([tool.mutmut] in
#                                             pyproject.toml), against their unit tests
#   bash scripts/mutation.sh trust [--fresh]  the modules that decide whether a number is trusted, reused,
#                                             compared or refused (scripts/mutation-trust.toml), run in a
#                                             copy of the tracked files under .mutation/trust/
# Prints killed / total per module and lists the survivors (inspect one: mutmut show NAME in that folder).
# Not part of CI: each set takes tens of minutes or more on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: torch's OpenMP workers spin, and mutmut limits CPU time, so they read as timeouts.
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg HYPOTHESIS_PROFILE=mutation OMP_NUM_THREADS=1
python -m pip install --quiet --disable-pip-version-check mutmut
if [[ "${1:-}" == "trust" ]]; then
  shift
  work=.mutation/trust
  mkdir -p "$work"
  git ls-files -z | xargs -0 cp --parents -t "$work/"   # the tracked files as they are now
  python - "$work/pyproject.toml" scripts/mutation-trust.toml <<'PY'
import re, sys
target, override = sys.argv[1], open(sys.argv[2]).read()
text = open(target).read()
section = re.search(r"^\[tool\.mutmut\]\n.*?(?=^\[)", text, re.S | re.M)
new = override[override.index("[tool.mutmut]"):]
open(target, "w").write(text[: section.start()] + new.rstrip() + "\n\n" + text[section.end():])
PY
  cd "$work"
fi
# Incremental: mutants/ keeps each mutant's result, and a rerun checks only what changed or was not
# checked yet. --fresh starts over.
if [[ "${1:-}" == "--fresh" ]]; then rm -rf mutants; shift; fi
mutmut run "$@" || true
mutmut results --all true > mutants/results.txt || true
python - <<'PY'
from collections import Counter
lines = [l.strip() for l in open("mutants/results.txt") if ":" in l]
status = Counter(l.rsplit(":", 1)[1].strip() for l in lines)
total = sum(status.values())
print(f"mutants: {total}; " + ", ".join(f"{k}: {v}" for k, v in sorted(status.items())))
by_module = {}
for l in lines:
    name, st = l.rsplit(":", 1)
    module = name.split(".x")[0] if ".x" in name else name.split("__mutmut")[0]
    killed, n = by_module.get(module, (0, 0))
    by_module[module] = (killed + (st.strip() in ("killed", "timeout")), n + 1)
for module, (killed, n) in sorted(by_module.items()):
    print(f"  {module:<40} {killed:>5} / {n:<5} killed")
for l in lines:
    if l.rsplit(":", 1)[1].strip() not in ("killed", "timeout"):
        print("  " + l)
PY
