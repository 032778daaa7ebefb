#!/usr/bin/env bash
# AttnMMAdapter base-to-novel on all 11 datasets for one seed on one GPU: train on base, then test on new.
#   bash scripts/attn_mm_adapter/base2new_all.sh GPU SEED [CFG]
source "$(dirname "$0")/../common.sh"
export GPU=$1
HERE="$(dirname "$0")"
for DATASET in $B2N_DATASETS; do
    bash "$HERE/base2new_train.sh" "$DATASET" "$2" "${3:-vit_b16_paper}"
    bash "$HERE/base2new_test.sh" "$DATASET" "$2" "${3:-vit_b16_paper}"
done
