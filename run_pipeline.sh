#!/usr/bin/env bash
# The whole FinReason pipeline, 00 -> 07, on the current profile (auto: a GPU profile with CUDA,
# else cpu). Every argument is passed to every step as config overrides, e.g.
#   bash run_pipeline.sh --PROFILE=cpu --EVAL_LIMIT=8
# Stops at the first failing step and names it; each step is resumable, so re-running continues.
# Uses `python` from PATH (make demo puts .venv/bin first). Ends with the wall time and peak
# memory of every step (finreason.measure).
set -euo pipefail
cd "$(dirname "$0")"

# FINREASON_PIPELINE_LOG keeps the steps' measurements (benchmarks/demo.py reads them); else a
# temporary file
if [[ -n "${FINREASON_PIPELINE_LOG:-}" ]]; then
    LOG="$FINREASON_PIPELINE_LOG"
else
    LOG=$(mktemp -t finreason-pipeline.XXXXXX)
    trap 'rm -f "$LOG"' EXIT
fi
run_step() {
    local name="$1"
    shift
    echo
    echo "=== ${name}: $* ==="
    if ! python -m finreason.measure --log "$LOG" --name "$name" -- "$@"; then
        echo "run_pipeline.sh: step '${name}' FAILED (command: $*); fix it and re-run (finished steps resume)." >&2
        exit 1
    fi
}

# 00: environment, pins, 4-bit, memory estimate -> outputs/check_env.json (fails early if unusable)
# --probe: a few real steps measure the peak memory of each stage before any training, and choose
# CPU_PRECISION=auto's precision from real steps (04 and 05 read the decision back)
run_step "00 check env + probe" python 00_check_env.py --probe "$@"
# 01: what the data looks like -> data statistics under outputs/explore/
run_step "01 explore data" python 01_explore_data.py "$@"
# 02: the untrained model on the evaluation slice -> outputs/eval/zero_shot.*
run_step "02 zero-shot baseline" python 02_zero_shot_baseline.py "$@"
# 03: prompts + SFT targets + GRPO rows -> outputs/data/
run_step "03 format data" python 03_format_data.py "$@"
# 04: SFT (LoRA/QLoRA, or every weight) -> outputs/sft/adapter|model, then the SFT evaluation
run_step "04 train SFT" python 04_train_sft.py "$@"
# 05: GRPO from the SFT weights with the verifiable reward -> outputs/grpo/adapter|model
run_step "05 train GRPO" python 05_train_grpo.py "$@"
# 06: each trained stage on the same evaluation slice as 02 -> outputs/eval/<stage>.* (04 already
#     ran the SFT one, so that step finds it done), plus the paired comparison of all stages
run_step "06 evaluate SFT" python 06_evaluate.py --stage sft "$@"
run_step "06 evaluate GRPO" python 06_evaluate.py --stage grpo "$@"
# 07: report + figures from whatever was evaluated -> outputs/report.md, outputs/figures/
run_step "07 analyze" python 07_analyze.py "$@"

# 08 (not run here): python 08_export.py -> outputs/export/ (merged folder, GGUF, Modelfile); its
#     verification needs llama.cpp's runtime (pip install -r requirements-export.txt, compiled)

echo
echo "=== done: wall time and peak memory per step ==="
python -m finreason.measure --summary "$LOG"
echo "report: outputs/report.md (or under your --OUTPUT_DIR); app: python app.py"
