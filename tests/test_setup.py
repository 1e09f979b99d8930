"""The fresh-machine promises: the README's two commands are what CI runs, set-up skips what is there, and a missing
bubblewrap makes the code-running tests skip with the reason instead of failing."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    """What .ci/run runs: the non-comment lines of the README's first bash block, read by .ci/run's own awk."""
    awk = re.search(r"awk '(.*?)' README.md", open(os.path.join(ROOT, ".ci", "run")).read(), re.S).group(1)
    out = subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def path_without(programs, folder):
    """PATH with `programs` hidden: each folder on PATH that holds one is replaced by a folder of links to the rest."""
    dirs = []
    for i, d in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if d and any(os.path.exists(os.path.join(d, p)) for p in programs):
            shadow = folder / f"path{i}"
            shadow.mkdir(parents=True)
            for name in set(os.listdir(d)) - set(programs):
                os.symlink(os.path.join(d, name), shadow / name)
            d = str(shadow)
        dirs.append(d)
    return os.pathsep.join(dirs)


def test_ci_runs_the_readmes_two_commands():
    setup, test = readme_commands()
    assert setup.startswith("bash scripts/setup.sh && .venv/bin/python agents.py ") and "--question" in setup
    assert test == "bash scripts/setup.sh && .venv/bin/python -m pytest"


def test_setup_skips_what_is_there_and_says_why_code_will_not_run(tmp_path):
    """A second run of set-up installs nothing; with no bubblewrap and no apt-get it says so and goes on."""
    (tmp_path / "scripts").mkdir()
    for f in ("scripts/setup.sh", "requirements.txt"):
        (tmp_path / f).write_text(open(os.path.join(ROOT, f)).read())
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake = tmp_path / ".venv" / "bin" / "python"  # answers --version; anything else (an install) fails the test
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.x" && exit 0\necho "called: $*" >&2; exit 1\n')
    fake.chmod(0o755)
    smollm = re.search(r'SMOLLM="([^"]+)"', (tmp_path / "scripts" / "setup.sh").read_text()).group(1)
    (tmp_path / ".venv" / ".installed").write_text((tmp_path / "requirements.txt").read_text() + smollm)
    env = dict(os.environ, PATH=path_without(("apt-get", "bwrap"), tmp_path / "bin"))
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "virtual environment: present" in r.stdout and "packages: up to date" in r.stdout, r.stdout
    assert "bubblewrap: missing" in r.stdout and "generated code will not run" in r.stdout, r.stdout


def test_without_bubblewrap_the_code_running_tests_skip_with_the_reason(tmp_path):
    """The tests marked `sandbox`, run with bubblewrap off PATH: every one skipped, with the sandbox's reason."""
    env = dict(os.environ, PATH=path_without(("bwrap",), tmp_path / "bin"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "sandbox", "-p", "no:cacheprovider", "-o", "addopts=", "-rs", "tests"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and re.fullmatch(r"=+ \d+ skipped, \d+ deselected in .* =+", last), r.stdout[-3000:]
    reasons = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("bubblewrap is not installed" in line for line in reasons), reasons
