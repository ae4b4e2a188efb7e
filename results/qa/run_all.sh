#!/usr/bin/env bash
# Full QA runs on SmolLM2-135M-Instruct (resumable: rerun to continue; a finished run only
# re-evaluates). Settings chosen to fit a 2-core CPU machine (README, "Results"): 16 answer
# tokens, K=5 samples, semantic entropy clustered by character-3-gram similarity, one torch
# thread, 8 questions per batch. The gradient scores and the one-pass baselines (MSP, mean token
# entropy) cover every question; the costly stages run on the first questions only
# (--method-subset ...=500: the samples and the sampling baselines and P(True); --trace-subset:
# the per-token trace, ~T times the score). Each run writes results/qa/<dataset>/ (one JSONL per
# stage, scores.jsonl, metrics.json, report.md, roc.png, risk_coverage.png, token_profile.png,
# config.json); logs go to results/qa/<dataset>.log. Stages of one dataset can also run one at a
# time (--stage generate|grade|score|trace|baselines|evaluate), e.g. datasets side by side.
# Usage: results/qa/run_all.sh [dataset ...]   (default: the four of the README table)
# The earlier, smaller runs (triviaqa-150, truthfulqa-gen-200, nq-open-500) are kept as they
# were; results/qa/<name>/report.md states the command of each.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
COMMON=(--model smollm2-135m --max-new-tokens 16 --k 5 --seed 0 --threads 1 --batch-size 8)
# semantic entropy's option only where it runs (an option for a method not run is refused)
COSTLY=(--trace --method-subset p_true=500,naive_entropy=500,semantic_entropy=500
        --trace-subset ${TRACE_SUBSET:-200}
        --option semantic_entropy.entailment=ngram)
run() {  # dataset, extra args...
  local ds=$1; shift
  # folders written before isograd qa had stages: split into stage files first (no recompute)
  if [ -f "results/qa/$ds/scores.jsonl" ] && [ ! -f "results/qa/$ds/generate.config.json" ]; then
    .venv/bin/isograd qa --convert "results/qa/$ds" --quiet
  fi
  nice -n 10 .venv/bin/isograd qa --dataset "$ds" "${COMMON[@]}" "$@" --out "results/qa/$ds" \
    > "results/qa/$ds.log" 2>&1 || echo "run $ds failed, see results/qa/$ds.log"
}
for ds in "${@:-triviaqa truthfulqa-gen truthfulqa-mc1 nq-open}"; do
  for d in $ds; do
    case $d in
      triviaqa) run triviaqa "${COSTLY[@]}" ;;
      truthfulqa-gen) run truthfulqa-gen "${COSTLY[@]}" ;;
      truthfulqa-mc1) run truthfulqa-mc1 --methods p_true,msp,mean_token_entropy --no-alternatives ;;
      nq-open) run nq-open --no-alternatives "${COSTLY[@]}" ;;
      arc-easy-train|arc-easy-validation|arc-easy-test)  # multiple choice: nothing sampled
        nice -n 10 .venv/bin/isograd qa --dataset "$d" --model smollm2-135m --max-new-tokens 16 \
          --seed 0 --threads 1 --batch-size 8 --methods p_true,msp,mean_token_entropy \
          --no-alternatives --out "results/qa/$d" > "results/qa/$d.log" 2>&1 \
          || echo "run $d failed, see results/qa/$d.log" ;;
      *) echo "unknown dataset $d" ;;
    esac
  done
done
