#!/usr/bin/env bash
# The paper's experiment for one lineup, from nothing to its tables, in one resumable command:
#   Table 3   train inner, train outer, the trained baselines (LoRA, full), then every method (single, lora, full,
#             moa, textgrad, text, latent) on the paper's benchmarks under --protocol paper
#   Table 2   the efficiency table over r = 1, 2, 3 (bench.py part 1)        Table 5   training cost (bench.py part 3)
# Every step that finished is skipped on a re-run (a marker in OUT/.done); a step cut short resumes (--resume).
# OUT/tables.md gathers Table 3 and points to the rest; OUT/eval/*-compare.png are the per-benchmark plots.
#
#   bash scripts/reproduce.sh paper-light [OUT]     # a GPU with the hub (docs/guide.md: time and memory per lineup)
#   bash scripts/reproduce.sh --tiny [OUT]          # the very same steps on tiny models and data: a few minutes
#
# Environment: PYTHON (default .venv/bin/python, else python3); DATA (training rows, default gsm8k); STEPS (training
# steps, default 2000; tiny 4); GPQA_PATH and LCB_PATH add GPQA-Diamond and LiveCodeBench (not shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
lineup="${1:-}"
[ -n "$lineup" ] || { echo "usage: bash scripts/reproduce.sh LINEUP|--tiny [OUT]  (LINEUP: paper-light, paper-scaled, ...)" >&2; exit 2; }
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if [ "$lineup" = --tiny ]; then
  out="${2:-runs/reproduce-tiny}"; agents="tiny-llama,tiny-qwen"; steps="${STEPS:-4}"
  benchmarks="gsm8k math500"
  small=(--limit 2 --seeds 1 --max-new-tokens 8 --final-answer-tokens 4 --moa-layers 2 --textgrad-steps 1)
  train=(--steps "$steps" --batch-size 2 --ckpt-every 2 --max-target-tokens 16)
  outer=(--rounds 2 --latent-steps 2 --eval-questions 0)
  bench=(--questions 2 --latent-steps 2 --max-new-tokens 6)
else
  out="${2:-runs/reproduce-$lineup}"; agents="$lineup"; steps="${STEPS:-2000}"
  benchmarks="math500 aime25 aime26 medqa${GPQA_PATH:+ gpqa_diamond}${LCB_PATH:+ livecodebench}"
  small=()
  train=(--steps "$steps" --batch-size 4)
  outer=(--rounds 3 --latent-steps 32 --lr 1e-4 --eval-questions 0)
  bench=(--latent-steps 32)
fi
"$py" -c "import cli, sys; cli.agent_names(sys.argv[1])" "$agents" 2>/dev/null \
  || { echo "error: unknown lineup '$lineup'; use --tiny or a preset such as paper-light, or agents a,b,c" >&2; exit 2; }
final=$("$py" -c "import patterns, sys; print(patterns.expand_agents(sys.argv[1], 'sequential')[0][-1])" "$agents")
data="${DATA:-gsm8k}"
mkdir -p "$out/.done"

step() {  # step NAME FOLDER CMD...: skipped when done; training resumes from its checkpoint, evaluation from its rows
  local name="$1" folder="$2" again=--overwrite
  shift 2
  if [ -e "$out/.done/$name" ]; then echo ">> $name: done, skipped"; return; fi
  if [ -e "$folder/latest" ] || [ "${name#eval-}" != "$name" ]; then again=--resume; fi
  echo ">> $name"
  "$@" "$again"
  touch "$out/.done/$name"
}

step train-inner "$out/inner" "$py" train_inner.py --agents "$agents" --data "$data" "${train[@]}" --out "$out/inner"
step train-outer "$out/outer" "$py" train_outer.py --agents "$agents" --data "$data" "${train[@]}" "${outer[@]}" \
  --links "$out/inner/links" --out "$out/outer"
for method in lora full; do
  step "train-$method" "$out/single-$method" "$py" train_single.py --agents "$final" --method "$method" \
    --data "$data" "${train[@]}" --out "$out/single-$method"
done
for b in $benchmarks; do
  step "eval-$b" "$out/eval" "$py" evaluate.py --agents "$agents" --benchmark "$b" --protocol paper "${small[@]}" \
    --compare single,lora,full,moa,textgrad,text,latent --links "$out/outer/links" \
    --adapter "$out/single-lora" --weights "$out/single-full" --out "$out/eval" --plot
done
if [ -e "$out/.done/bench" ]; then echo ">> bench: done, skipped"; else  # Tables 2 and 5: measured whole
  echo ">> bench"
  "$py" bench.py --agents "$agents" --rounds 3 --skip rollout,step,grad "${bench[@]}" --out "$out/bench"
  touch "$out/.done/bench"
fi
"$py" scripts/tables.py "$out"
