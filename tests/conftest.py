import os

# A failed hub download takes ~50 s to give up; tests never download anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Mutation runs (scripts/mutation.sh) want a failing property test to fail fast, not to shrink.
from hypothesis import Phase, settings  # noqa: E402 (after the environment is set)

settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
