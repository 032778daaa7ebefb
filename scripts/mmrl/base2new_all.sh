#!/usr/bin/env bash
# MMRL base-to-novel on all 11 datasets for one seed on one GPU: train on base, then test on new.
#   bash scripts/mmrl/base2new_all.sh GPU SEED
source "$(dirname "$0")/../common.sh"
export GPU=$1
SEED=$2
HERE="$(dirname "$0")"
for DATASET in $B2N_DATASETS; do
    bash "$HERE/base2new_train.sh" "$DATASET" "$SEED"
    bash "$HERE/base2new_test.sh" "$DATASET" "$SEED"
done
