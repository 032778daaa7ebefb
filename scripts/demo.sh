#!/usr/bin/env bash
# The main job: the complete base-to-novel protocol (train on base classes, test on new classes)
# for every adaptation trainer, on miniature datasets, 2 seeds, then a table of zero-shot CLIP beside
# each trained model (Base / New / HM).
#
#   bash scripts/demo.sh
#
# Offline and CPU-only: the "mini-clip" backbone, a miniature CLIP pretrained on the synthetic world
# the miniature datasets are drawn from (clip/weights/README.md), so the numbers are that world's,
# not real CLIP's. Environment (defaults in brackets):
#   DATA [data_mini]  OUTPUT [output/demo-mini-clip]  DATASETS ["oxford_pets dtd"]  SEEDS ["1 2"]
#   METHODS ["clip_adapter mma attn_mm_adapter mmrl"]  SHOTS [8]  EPOCHS [10]  TEST_PER_CLASS [10]
# The runs are those of the per-method scripts (scripts/<method>/base2new_{train,test}.sh), run by
# scripts/benchmark.py on JOBS [2] CPU workers (each imports the code once), one CPU thread each.
# Each run's full log is in its output folder (log.txt); console output in $OUTPUT/benchmark/console/.
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export DATA=${DATA:-data_mini}
export OUTPUT=${OUTPUT:-output/demo-mini-clip}
export SHOTS=${SHOTS:-8}
DATASETS=${DATASETS:-"oxford_pets dtd"}
SEEDS=${SEEDS:-"1 2"}
METHODS=${METHODS:-"clip_adapter mma attn_mm_adapter mmrl"}
EPOCHS=${EPOCHS:-10}
TEST_PER_CLASS=${TEST_PER_CLASS:-10}
JOBS=${JOBS:-2}
declare -A TRAINER_OF=([clip_adapter]=CLIP_Adapter [mma]=MultiModalAdapter [attn_mm_adapter]=AttnMMAdapter [mmrl]=MMRL)
TRAINERS="ZeroshotCLIP"  # zero-shot mini-clip on the base and the new classes, the reference
for method in $METHODS; do TRAINERS="$TRAINERS ${TRAINER_OF[$method]:?unknown method $method}"; done
# fp32 everywhere: "amp" means bf16 autocast on a CPU, which many CPUs emulate very slowly.
PREC_FP32="TRAINER.MMADAPTER.PREC fp32 TRAINER.CLIP_ADAPTER.PREC fp32 TRAINER.MMRL.PREC fp32 TRAINER.ATTN_MM_ADAPTER.PREC fp32"
# CLIP-Adapter: the paper's blend ratio for fine-grained datasets (0.6; its default 0.2 is for generic ones).
DEMO_SETTINGS="TRAINER.CLIP_ADAPTER.RATIO 0.6"
export OPTS="MODEL.BACKBONE.NAME mini-clip DATALOADER.NUM_WORKERS 0 OPTIM.MAX_EPOCH $EPOCHS $PREC_FP32 $DEMO_SETTINGS ${OPTS:-}"

start=$(date +%s)
echo "== Miniature datasets in $DATA: $DATASETS"
# shellcheck disable=SC2086
python -m datasets.mini --root "$DATA" --datasets $DATASETS --per-class "$SHOTS" \
    --test-per-class "$TEST_PER_CLASS" | tail -n 1

echo "== Base-to-novel: $METHODS on $DATASETS, seeds $SEEDS ($JOBS CPU workers)"
# shellcheck disable=SC2086
if ! python scripts/benchmark.py run --trainer $TRAINERS --protocol base2new --seeds $SEEDS --datasets $DATASETS \
        --shots "$SHOTS" --gpus cpu --jobs "$JOBS" --no-table; then
    echo "The demo failed; console output is in $OUTPUT/benchmark/console/" >&2
    exit 1
fi

echo "== Results: zero-shot mini-clip (ZS) and after training on the base classes, mean over seeds $SEEDS"
echo "   (accuracy % on the miniature test sets: numbers of the synthetic world, not of real CLIP)"
python scripts/demo_table.py "$OUTPUT"
echo "== Finished in $(( $(date +%s) - start )) s. Logs under $OUTPUT/base2new/"
