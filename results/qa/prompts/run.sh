#!/usr/bin/env bash
# The prompt-style comparison (the paper gives no prompt): the same model, questions and
# settings as results/qa/run_all.sh, with --prompt plain and --prompt fewshot; the `short` rows
# are the full runs in results/qa/<dataset>. Gradient scores and P(True) only (the other
# baselines do not change the question). Resumable. Usage: results/qa/prompts/run.sh [style ...]
# Summary table: .venv/bin/python results/qa/summarize.py --prompts
set -u
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
COMMON=(--model smollm2-135m --max-new-tokens 16 --seed 0 --threads 1 --methods p_true
        --no-alternatives --quiet)
for style in "${@:-plain fewshot}"; do
  for s in $style; do
    for spec in triviaqa-150:150 truthfulqa-gen:200; do
      ds=${spec%%:*}; n=${spec##*:}; dir="results/qa/prompts/$ds-$s"
      # folders written before isograd qa had stages: split into stage files first (no recompute)
      if [ -f "$dir/scores.jsonl" ] && [ ! -f "$dir/generate.config.json" ]; then
        .venv/bin/isograd qa --convert "$dir" --quiet
      fi
      nice -n 10 .venv/bin/isograd qa --dataset "$ds" --limit "$n" --prompt "$s" "${COMMON[@]}" \
        --out "results/qa/prompts/$ds-$s" > "results/qa/prompts/$ds-$s.log" 2>&1 \
        || echo "run $ds $s failed, see results/qa/prompts/$ds-$s.log"
    done
  done
done
