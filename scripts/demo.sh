#!/usr/bin/env bash
# The main job: the complete base-to-novel protocol (train on base classes, test on new classes)
# for every adaptation trainer, on miniature datasets, 2 seeds, then the results table.
#
#   bash scripts/demo.sh
#
# Offline and CPU-only: the "test-tiny" backbone with RANDOM weights on generated images, so the
# accuracies mean nothing; the point is the pipeline. Environment (defaults in brackets):
#   DATA [data_mini]  OUTPUT [output/demo]  DATASETS ["caltech101 eurosat"]  SEEDS ["1 2"]
#   METHODS ["clip_adapter mma attn_mm_adapter mmrl"]  SHOTS [2]  EPOCHS [2]
# The runs are those of the per-method scripts (scripts/<method>/base2new_{train,test}.sh), queued
# and executed in one Python process per seed (imports paid once), seeds in parallel, one CPU thread
# each. Each run's full log is in its output folder (log.txt); console output in $OUTPUT/console/.
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export DATA=${DATA:-data_mini}
export OUTPUT=${OUTPUT:-output/demo}
export SHOTS=${SHOTS:-2}
DATASETS=${DATASETS:-"caltech101 eurosat"}
SEEDS=${SEEDS:-"1 2"}
METHODS=${METHODS:-"clip_adapter mma attn_mm_adapter mmrl"}
EPOCHS=${EPOCHS:-2}
# fp32 everywhere: "amp" means bf16 autocast on a CPU, which many CPUs emulate very slowly.
PREC_FP32="TRAINER.MMADAPTER.PREC fp32 TRAINER.CLIP_ADAPTER.PREC fp32 TRAINER.MMRL.PREC fp32 TRAINER.ATTN_MM_ADAPTER.PREC fp32"
export OPTS="MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH $EPOCHS $PREC_FP32 ${OPTS:-}"

start=$(date +%s)
echo "== Miniature datasets in $DATA: $DATASETS"
# shellcheck disable=SC2086
python -m datasets.mini --root "$DATA" --datasets $DATASETS | tail -n 1

mkdir -p "$OUTPUT/console"

# queue_and_run SEED STEP: queue STEP (train or test) of every method and dataset through the
# method's own scripts, then run the queue in one Python process (see scripts/run_queue.py).
queue_and_run() {
    local seed="$1" step="$2" method dataset
    local queue="$OUTPUT/console/queue_${step}_seed$seed.txt"
    : > "$queue"
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

echo "== Results (random weights: the numbers only show that the pipeline works)"
python parse_test_res.py "$OUTPUT" --table
echo "== Finished in $(( $(date +%s) - start )) s. Logs under $OUTPUT/base2new/"
