#!/usr/bin/env bash
# A small Table 3 on a laptop: every method of the paper's comparison on arith2 (tasks.py: generated two-step
# arithmetic word problems; training rows and the held-out questions share no template and no number triple), with
# SmolLM2 x2, the trained methods at the same budget: STEPS optimizer steps of BATCH rows each.
#   lora, full   train_single.py: the final agent alone, a LoRA adapter or every weight, answer cross-entropy
#   latent       the method's two stages, STEPS/2 optimizer steps each: train_inner.py (each agent's inner link, cosine
#                to the next token of its role's text) then train_outer.py (the outer links, answer cross-entropy
#                through r rounds of rollouts)
#   single, moa, textgrad, text   need no training (the untrained agent; Mixture-of-Agents, TextGrad and
#                Recursive-TextMAS on the same frozen agents)
# then evaluate.py --compare on the first LIMIT held-out questions: one table (accuracy with its 95% interval,
# tokens, latent steps, seconds per question), its rows and OUT/eval/arith2-compare.png. An answer cut at TOKENS gets
# the paper's "Final Answer:" line and 16 more tokens (protocol.FINAL_ANSWER), so a long one still states an answer.
# Every step that finished is skipped on a re-run (a marker in OUT/.done); a step cut short resumes (--resume).
#
#   bash scripts/same_budget.sh [OUT]       # default OUT: runs/same-budget
#
# Environment: PYTHON (default .venv/bin/python, else python3); AGENTS (default smollm,smollm); STEPS (40), BATCH (8),
# LIMIT (200), ROUNDS (1), LATENT_STEPS (8), TOKENS (most new tokens per agent, 64:
# the trained methods learn targets of at most 64 tokens, --max-target-tokens), MOA_LAYERS (2), TEXTGRAD_STEPS (1).
# MoA and TextGrad run below their frameworks' defaults (3 layers, 3 iterations: evaluate.py's): on 2 CPU cores their
# 5 and 10 generations per question would about double the 16 minutes the two take here and push the command past
# 45 minutes; 2 layers (every agent answers, the final agent aggregates) and one evaluate-feedback-rewrite iteration
# are the smallest forms of each.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/same-budget}"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
agents="${AGENTS:-smollm,smollm}"
steps="${STEPS:-40}"; batch="${BATCH:-8}"; limit="${LIMIT:-200}"
rounds="${ROUNDS:-1}"; latent="${LATENT_STEPS:-8}"; tokens="${TOKENS:-64}"
layers="${MOA_LAYERS:-2}"; tg_steps="${TEXTGRAD_STEPS:-1}"
[[ "$steps" =~ ^[0-9]+$ && "$steps" -ge 2 ]] \
  || { echo "error: STEPS must be a whole number >= 2 (the links' two stages take half each)" >&2; exit 2; }
for v in BATCH:$batch LIMIT:$limit ROUNDS:$rounds LATENT_STEPS:$latent TOKENS:$tokens MOA_LAYERS:$layers; do
  [[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] || { echo "error: ${v%%:*} must be a whole number >= 1, not '${v#*:}'" >&2; exit 2; }
done
[[ "$tg_steps" =~ ^[0-9]+$ ]] || { echo "error: TEXTGRAD_STEPS must be a whole number >= 0, not '$tg_steps'" >&2; exit 2; }
"$py" -c "import cli, sys; cli.agent_names(sys.argv[1])" "$agents" 2>/dev/null \
  || { echo "error: unknown AGENTS '$agents'; pass aliases such as smollm,smollm" >&2; exit 2; }
final=$("$py" -c "import patterns, sys; print(patterns.expand_agents(sys.argv[1], 'sequential')[0][-1])" "$agents")
mkdir -p "$out/.done"
start=$SECONDS

step() {  # step NAME FOLDER CMD...: skipped when done; training resumes from its checkpoint, evaluation from its rows
  local name="$1" folder="$2" again=--overwrite
  shift 2
  if [ -e "$out/.done/$name" ]; then echo ">> $name: done, skipped"; return; fi
  if [ -e "$folder/latest" ] || { [ "$name" = eval ] && [ -d "$folder" ]; }; then again=--resume; fi
  echo ">> $name ($(( SECONDS - start )) s so far)"
  "$@" "$again"
  touch "$out/.done/$name"
}

budget=(--data arith2 --steps "$steps" --batch-size "$batch" --max-target-tokens 64 --ckpt-every 10)
for method in lora full; do
  step "train-$method" "$out/$method" "$py" train_single.py --agents "$final" --method "$method" "${budget[@]}" \
    --out "$out/$method"
done
# the links' learning rate is the latent-channel proof's (train_outer.py's example), not tuned on this task
links=(--data arith2 --batch-size "$batch" --max-target-tokens 64 --ckpt-every 10 --lr 2e-3)
step train-inner "$out/inner" "$py" train_inner.py --agents "$agents" --steps $(( steps / 2 )) "${links[@]}" \
  --out "$out/inner"
step train-outer "$out/latent" "$py" train_outer.py --agents "$agents" --links "$out/inner/links" \
  --rounds "$rounds" --latent-steps "$latent" --steps $(( steps - steps / 2 )) --eval-questions 0 "${links[@]}" \
  --out "$out/latent"
step eval "$out/eval" "$py" evaluate.py --agents "$agents" --benchmark arith2 --limit "$limit" \
  --compare single,lora,full,latent,text,moa,textgrad --rounds "$rounds" --latent-steps "$latent" \
  --max-new-tokens "$tokens" --final-answer-tokens 16 --moa-layers "$layers" --textgrad-steps "$tg_steps" \
  --batch-size 25 --links "$out/latent/links" --adapter "$out/lora" \
  --weights "$out/full" --out "$out/eval" --plot
echo "same budget: $steps optimizer steps x $batch rows for lora, full and latent (inner $(( steps / 2 )) + outer" \
  "$(( steps - steps / 2 ))); $(( SECONDS - start )) s in this run"
