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
# The runs are those of the per-method scripts (scripts/<method>/base2new_{train,test}.sh), run by
# scripts/benchmark.py on JOBS [2] CPU workers (each imports the code once), one CPU thread each.
# Each run's full log is in its output folder (log.txt); console output in $OUTPUT/benchmark/console/.
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
JOBS=${JOBS:-2}
declare -A TRAINER_OF=([clip_adapter]=CLIP_Adapter [mma]=MultiModalAdapter [attn_mm_adapter]=AttnMMAdapter [mmrl]=MMRL)
TRAINERS=""
for method in $METHODS; do TRAINERS="$TRAINERS ${TRAINER_OF[$method]:?unknown method $method}"; done
# fp32 everywhere: "amp" means bf16 autocast on a CPU, which many CPUs emulate very slowly.
PREC_FP32="TRAINER.MMADAPTER.PREC fp32 TRAINER.CLIP_ADAPTER.PREC fp32 TRAINER.MMRL.PREC fp32 TRAINER.ATTN_MM_ADAPTER.PREC fp32"
export OPTS="MODEL.BACKBONE.NAME test-tiny MODEL.BACKBONE.WEIGHTS random DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH $EPOCHS $PREC_FP32 ${OPTS:-}"

start=$(date +%s)
echo "== Miniature datasets in $DATA: $DATASETS"
# shellcheck disable=SC2086
python -m datasets.mini --root "$DATA" --datasets $DATASETS | tail -n 1

echo "== Base-to-novel: $METHODS on $DATASETS, seeds $SEEDS ($JOBS CPU workers)"
# shellcheck disable=SC2086
if ! python scripts/benchmark.py run --trainer $TRAINERS --protocol base2new --seeds $SEEDS --datasets $DATASETS \
        --shots "$SHOTS" --gpus cpu --jobs "$JOBS" --no-table; then
    echo "The demo failed; console output is in $OUTPUT/benchmark/console/" >&2
    exit 1
fi

echo "== Results (random weights: the numbers only show that the pipeline works)"
python parse_test_res.py "$OUTPUT" --table
echo "== Finished in $(( $(date +%s) - start )) s. Logs under $OUTPUT/base2new/"
