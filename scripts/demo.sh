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
# Seeds run in parallel, one CPU thread each. Each run's full log is in its output folder
# (log.txt); console output goes to $OUTPUT/console/.
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
n_methods=$(wc -w <<< "$METHODS"); n_datasets=$(wc -w <<< "$DATASETS")
total=$((n_methods * n_datasets)); step=0

# run_seed METHOD DATASET SEED: base training then the novel-class test, console to one file.
run_seed() {
    local console="$OUTPUT/console/$1_$2_seed$3.txt"
    if ! { bash "scripts/$1/base2new_train.sh" "$2" "$3" && bash "scripts/$1/base2new_test.sh" "$2" "$3"; } \
            > "$console" 2>&1; then
        echo "FAILED: $1 $2 seed $3; the end of $console:" >&2
        tail -n 25 "$console" >&2
        return 1
    fi
}

for method in $METHODS; do
    for dataset in $DATASETS; do
        step=$((step + 1))
        t0=$(date +%s)
        printf "== [%d/%d] %-16s %-12s seeds %s ... " "$step" "$total" "$method" "$dataset" "$SEEDS"
        pids=()
        for seed in $SEEDS; do
            run_seed "$method" "$dataset" "$seed" & pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid"; done
        echo "done ($(( $(date +%s) - t0 )) s)"
    done
done

echo "== Results (random weights: the numbers only show that the pipeline works)"
python parse_test_res.py "$OUTPUT" --table
echo "== Finished in $(( $(date +%s) - start )) s. Logs under $OUTPUT/base2new/"
