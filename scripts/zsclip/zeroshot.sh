#!/usr/bin/env bash
# Zero-shot CLIP on one dataset: zeroshot.sh DATASET [CFG] [SUBSAMPLE]
#   CFG: a config in configs/trainers/ZeroshotCLIP/ (default vit_b16); SUBSAMPLE: all (default), base or new.
# Output: $OUTPUT/zeroshot/<dataset>/ZeroshotCLIP/<cfg>_<subsample>/log.txt
source "$(dirname "$0")/../common.sh"
DATASET=$1
CFG=${2:-vit_b16}
SUBSAMPLE=${3:-all}
DIR="$OUTPUT/zeroshot/$DATASET/ZeroshotCLIP/${CFG}_${SUBSAMPLE}"
prepare_run "$DIR" || exit 0
# shellcheck disable=SC2086
train_py --root "$DATA" --trainer ZeroshotCLIP \
    --dataset-config-file "$REPO/configs/datasets/$DATASET.yaml" \
    --config-file "$REPO/configs/trainers/ZeroshotCLIP/$CFG.yaml" \
    --output-dir "$DIR" --eval-only DATASET.SUBSAMPLE_CLASSES "$SUBSAMPLE" $OPTS
