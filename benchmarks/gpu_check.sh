#!/usr/bin/env bash
# The GPU check, one script: the cuda-marked tests, the training-step benchmark, and a real run at
# the paper's size (standard model, d = 20, 41 points, batch 64) with torch.compile, in fp32 (the
# default, TF32 matmuls) and in bf16 (trainer.amp=true), then CLAIM_STEPS steps of each claim at
# the paper's size through minicl.reproduce (compile, curriculum, checkpoint, evaluation and verdict;
# the verdicts mean nothing this early, the steps_per_s of each run's metrics.jsonl is the cost).
#   bash benchmarks/gpu_check.sh                      # on a machine with a GPU
#   STEPS=20 CLAIM_STEPS=3 bash benchmarks/gpu_check.sh   # a short pass over the same paths (also on CPU)
#   CLAIM_STEPS=0 bash ...                            # without the claims
#   SIZES="tiny or small or standard" bash ...        # the step benchmark for more sizes (default: standard)
# Writes its log and results under ${OUT:-/tmp/minicl_gpu_check}.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/minicl_gpu_check}
steps=${STEPS:-2000}
claim_steps=${CLAIM_STEPS:-300}
mkdir -p "$out"
status=0
python - <<'PY'
import torch
print("torch", torch.__version__, "| device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA, CPU paths only")
PY
python -m pytest tests -m cuda -q -p no:cacheprovider || status=1
python -m pytest benchmarks/test_train_speed.py --benchmark -q -p no:cacheprovider -k "${SIZES:-standard}" \
    --benchmark-json "$out/train_speed.json" || status=1
for amp in false true; do
    start=$(date +%s)
    python -m minicl.train task=linear trainer.steps="$steps" trainer.curriculum=false trainer.progress=false \
        trainer.amp=$amp trainer.log_every=$(( steps < 500 ? steps : 500 )) trainer.checkpoint_every="$steps" \
        trainer.snapshot_every=0 trainer.eval_prompts=1280 hydra.run.dir="$out/paper_size_run_amp_$amp" || status=1
    echo "paper-size run, trainer.amp=$amp: $steps steps in $(( $(date +%s) - start )) s (compile included); its log:"
    cat "$out/paper_size_run_amp_$amp/metrics.jsonl"
done
if (( claim_steps > 0 )); then
    start=$(date +%s)
    python -m minicl.reproduce scale=paper out="$out/claims" n_prompts=64 \
        'overrides=["trainer.steps='"$claim_steps"'","trainer.progress=false"]' || status=1
    echo "claims at scale=paper, $claim_steps steps each: $(( $(date +%s) - start )) s (compile and evaluation included)"
    for log in "$out"/claims/paper/*/metrics.jsonl; do echo "$log: $(tail -n 1 "$log")"; done
fi
exit $status
