#!/usr/bin/env bash
# Full QA runs on SmolLM2-135M-Instruct and Gemma 3 270M (resumable: rerun to continue; a finished run only
# re-evaluates). Settings chosen to fit a 2-core CPU machine (README, "Results"): 16 answer
# tokens, K=5 samples, semantic entropy clustered by character-3-gram similarity, one torch
# thread, 8 questions per batch. The gradient scores and the one-pass baselines (MSP, mean token
# entropy) cover every question; the costly stages run on the first questions only
# (--method-subset ...=500: the samples and the sampling baselines and P(True); --trace-subset:
# the per-token trace, ~T times the score). Each run writes results/qa/<entry>/ (one JSONL per
# stage, scores.jsonl, metrics.json, report.md, roc.png, risk_coverage.png, token_profile.png,
# config.json); logs go to results/qa/<entry>.log. Stages of one dataset can also run one at a
# time (--stage generate|grade|score|trace|baselines|evaluate), e.g. datasets side by side.
# Usage: results/qa/run_all.sh [entry ...]   (default: the four of the README table). Entries:
# triviaqa truthfulqa-gen truthfulqa-mc1 nq-open arc-easy-train arc-easy-validation
# arc-easy-test (SmolLM2-135M-Instruct); gemma3-270m-triviaqa gemma3-270m-truthfulqa-gen
# gemma3-270m-truthfulqa-mc1 gemma3-270m-arc-easy-test (Gemma 3 270M base, --prompt base);
# triviaqa-base-500 (SmolLM2 in Gemma's prompt). Each writes results/qa/<entry>/.
# RANKS=2 results/qa/run_all.sh ENTRY runs one entry data-parallel under torchrun (two
# processes of one thread each, gloo on the CPU, each computing half the rows of every stage;
# results do not depend on the number of processes: README, "Scaling out"). Never beside
# another run.
# The earlier, smaller runs (triviaqa-150, truthfulqa-gen-200, nq-open-500) are kept as they
# were; results/qa/<name>/report.md states the command of each.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
COMMON=(--max-new-tokens 16 --k 5 --seed 0 --threads 1 --batch-size 8)
# semantic entropy's option only where it runs (an option for a method not run is refused)
COSTLY=(--trace --method-subset p_true=500,naive_entropy=500,semantic_entropy=500
        --trace-subset ${TRACE_SUBSET:-200}
        --option semantic_entropy.entailment=ngram)
MC=(--methods p_true,msp,mean_token_entropy --no-alternatives)  # multiple choice: nothing sampled
run() {  # output folder, dataset, model, extra args...
  local out=$1 ds=$2 model=$3; shift 3
  # folders written before isograd qa had stages: split into stage files first (no recompute)
  if [ -f "results/qa/$out/scores.jsonl" ] && [ ! -f "results/qa/$out/generate.config.json" ]; then
    .venv/bin/isograd qa --convert "results/qa/$out" --quiet
  fi
  local launch=(.venv/bin/isograd)
  if [ "${RANKS:-1}" -gt 1 ]; then
    launch=(.venv/bin/torchrun --standalone --nproc-per-node "$RANKS" --no-python .venv/bin/isograd)
  fi
  OMP_NUM_THREADS=1 nice -n 10 "${launch[@]}" qa --dataset "$ds" --model "$model" "${COMMON[@]}" "$@" \
    --out "results/qa/$out" > "results/qa/$out.log" 2>&1 \
    || echo "run $out failed, see results/qa/$out.log"
}
for ds in "${@:-triviaqa truthfulqa-gen truthfulqa-mc1 nq-open}"; do
  for d in $ds; do
    case $d in
      triviaqa) run triviaqa triviaqa smollm2-135m "${COSTLY[@]}" ;;
      truthfulqa-gen) run truthfulqa-gen truthfulqa-gen smollm2-135m "${COSTLY[@]}" ;;
      truthfulqa-mc1) run truthfulqa-mc1 truthfulqa-mc1 smollm2-135m "${MC[@]}" ;;
      nq-open) run nq-open nq-open smollm2-135m --no-alternatives "${COSTLY[@]}" ;;
      arc-easy-train|arc-easy-validation|arc-easy-test) run "$d" "$d" smollm2-135m "${MC[@]}" ;;
      # the second family (issue 24): Gemma 3 270M base, few-shot base-model prompt
      gemma3-270m-triviaqa|gemma3-270m-truthfulqa-gen)
        run "$d" "${d#gemma3-270m-}" gemma3-270m --prompt base "${COSTLY[@]}" ;;
      gemma3-270m-truthfulqa-mc1) run "$d" truthfulqa-mc1 gemma3-270m --prompt base "${MC[@]}" ;;
      gemma3-270m-arc-easy-test) run "$d" arc-easy-test gemma3-270m --prompt base "${MC[@]}" ;;
      # SmolLM2 in the base-model prompt: the prompt's share of a difference between the models
      triviaqa-base-500) run "$d" triviaqa smollm2-135m --prompt base --limit 500 "${COSTLY[@]}" ;;
      *) echo "unknown dataset $d" ;;
    esac
  done
done
