#!/usr/bin/env bash
# The fast path's GPU checks in one command that needs nothing installed beyond torch, transformers, pytest and peft
# (run it from the repository root). Its parts are time-capped at 570 s in all:
#   1. the fast path's CUDA tests: CUDA-graph and compiled steps equal eager (float32 and bfloat16, 3 architectures)
#   2. one latent step on random-initialised paper-sized models, batch 1 and 16: eager HF vs static cache vs
#      + CUDA graph vs + torch.compile, against the weight-read floor (bench.py, part 4)
#   3. the KV-cached rollout vs recompute, and training cost (links / LoRA / full fine-tuning) on the same models
# Full outputs go under $OUT (default runs/gpu); each part prints its table as it ends.
#
#   on a GPU:  bash scripts/gpu_check.sh      dry run on a CPU:  DEVICE=cpu MODELS=tiny-qwen,tiny-llama bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
device=${DEVICE:-cuda}
models=${MODELS:-random-qwen2.5-1.5b,random-llama-3.2-1b}
py=$(command -v python3 || command -v python)
mkdir -p "$out"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $py -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__,
'transformers', transformers.__version__)"; } > "$out/pytest.txt" 2>&1

# The three parts are capped at 150 + 270 + 150 s (fits a 10-minute job slot), and each prints its table as soon as it
# ends, so a run cut short still shows what it finished.
timeout 150 $py -m pytest -q -p no:cacheprovider tests/test_fast.py >> "$out/pytest.txt" 2>&1
echo "pytest exit $?" >> "$out/pytest.txt"
tail -n 14 "$out/pytest.txt"

report() { sed -n '/^== report/,/^([0-9]* s in all)/p' "$1" | grep -v '^$' | grep . || tail -n 8 "$1"; }
# batch 1: every mode (compile takes a minute or two per model); batch 16: eager vs graph, then rollout + training
timeout 270 $py bench.py --agents "$models" --device "$device" --skip e2e,rollout,train,grad --step-batch 1 \
  --step-modes off,static,graph,compile --out "$out/b1" > "$out/b1.txt" 2>&1
echo; report "$out/b1.txt"
timeout 150 $py bench.py --agents "$models" --device "$device" --skip e2e,grad --step-batch 16 --step-modes off,graph \
  --rollout-m 16,80 --out "$out/b16" > "$out/b16.txt" 2>&1
echo; report "$out/b16.txt"
