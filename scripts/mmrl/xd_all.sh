#!/usr/bin/env bash
# MMRL cross-dataset and domain generalisation for one seed on one GPU: train on ImageNet, then
# test on the 10 other datasets and the 4 ImageNet variants.
#   bash scripts/mmrl/xd_all.sh GPU SEED
source "$(dirname "$0")/../common.sh"
export GPU=$1
SEED=$2
HERE="$(dirname "$0")"
bash "$HERE/xd_train.sh" "$SEED"
for DATASET in $XD_TARGETS $DG_TARGETS; do
    bash "$HERE/xd_test.sh" "$DATASET" "$SEED"
done
