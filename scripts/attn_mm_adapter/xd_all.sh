#!/usr/bin/env bash
# AttnMMAdapter cross-dataset and domain generalisation for one seed on one GPU: train on ImageNet,
# then test on the 10 other datasets and the 4 ImageNet variants.
#   bash scripts/attn_mm_adapter/xd_all.sh GPU SEED [CFG]
source "$(dirname "$0")/../common.sh"
export GPU=$1
HERE="$(dirname "$0")"
bash "$HERE/xd_train.sh" "$2" "${3:-vit_b16_paper}"
for DATASET in $XD_TARGETS $DG_TARGETS; do
    bash "$HERE/xd_test.sh" "$DATASET" "$2" "${3:-vit_b16_paper}"
done
