#!/usr/bin/env bash
# The main job: the complete base-to-novel protocol (train on base classes, test on new classes)
# for every adaptation trainer, on miniature datasets, 2 seeds, then zero-shot CLIP beside each
# trained model (Base / New / HM).
#
#   bash scripts/demo.sh
#
# Offline and CPU-only: the "mini-clip" backbone, a miniature CLIP pretrained on the synthetic world
# the miniature datasets are drawn from (clip/weights/MINI_CLIP.md), so the numbers are those of
# that world, not of real CLIP. Environment (defaults in brackets):
#   DATA [data_mini]  OUTPUT [output/demo-mini-clip]  DATASETS ["caltech101 eurosat"]  SEEDS ["1 2"]
#   METHODS ["clip_adapter mma attn_mm_adapter mmrl"]  SHOTS [4]  EPOCHS [2]  TEST_PER_CLASS [10]
# The runs are those of the per-method scripts (scripts/<method>/base2new_{train,test}.sh), queued
# and executed in one Python process per seed (imports paid once), seeds in parallel, one CPU thread
# each. Each run's full log is in its output folder (log.txt); console output in $OUTPUT/console/.
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export DATA=${DATA:-data_mini}
export OUTPUT=${OUTPUT:-output/demo-mini-clip}
export SHOTS=${SHOTS:-4}
DATASETS=${DATASETS:-"caltech101 eurosat"}
SEEDS=${SEEDS:-"1 2"}
METHODS=${METHODS:-"clip_adapter mma attn_mm_adapter mmrl"}
EPOCHS=${EPOCHS:-2}
TEST_PER_CLASS=${TEST_PER_CLASS:-10}
# fp32 everywhere: "amp" means bf16 autocast on a CPU, which many CPUs emulate very slowly.
PREC_FP32="TRAINER.MMADAPTER.PREC fp32 TRAINER.CLIP_ADAPTER.PREC fp32 TRAINER.MMRL.PREC fp32 TRAINER.ATTN_MM_ADAPTER.PREC fp32"
export OPTS="MODEL.BACKBONE.NAME mini-clip DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH $EPOCHS $PREC_FP32 ${OPTS:-}"

start=$(date +%s)
echo "== Miniature datasets in $DATA: $DATASETS"
# shellcheck disable=SC2086
python -m datasets.mini --root "$DATA" --datasets $DATASETS --per-class "$SHOTS" \
    --test-per-class "$TEST_PER_CLASS" | tail -n 1

mkdir -p "$OUTPUT/console"

# queue_and_run SEED STEP: queue STEP (train or test) of every method and dataset through the
# method's own scripts, then run the queue in one Python process (see scripts/run_queue.py).
# Zero-shot CLIP on the base and the new classes goes first in the first seed's training queue.
queue_and_run() {
    local seed="$1" step="$2" method dataset
    local queue="$OUTPUT/console/queue_${step}_seed$seed.txt"
    : > "$queue"
    if [ "$step" = train ] && [ "$seed" = "${SEEDS%% *}" ]; then
        for dataset in $DATASETS; do
            RUN_QUEUE="$queue" bash scripts/zsclip/zeroshot.sh "$dataset" vit_b16 base
            RUN_QUEUE="$queue" bash scripts/zsclip/zeroshot.sh "$dataset" vit_b16 new
        done
    fi
    for method in $METHODS; do
        for dataset in $DATASETS; do
            RUN_QUEUE="$queue" bash "scripts/$method/base2new_$step.sh" "$dataset" "$seed"
        done
    done
    python scripts/run_queue.py "$queue" --label "seed $seed $step " --console "$OUTPUT/console/seed$seed.txt"
}

echo "== Base-to-novel: $METHODS on $DATASETS, seeds $SEEDS (one process per seed, in parallel)"
pids=()
for seed in $SEEDS; do
    { queue_and_run "$seed" train && queue_and_run "$seed" test; } & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "$status" != 0 ]; then
    echo "The demo failed; console output is in $OUTPUT/console/" >&2
    exit 1
fi

echo "== Results: zero-shot mini-clip (ZS) and after training on the base classes, mean over seeds $SEEDS"
echo "   (accuracy % on the miniature test sets; the synthetic world's numbers, not real CLIP's)"
python scripts/demo_table.py "$OUTPUT"
echo "== Finished in $(( $(date +%s) - start )) s. Logs under $OUTPUT/base2new/"
