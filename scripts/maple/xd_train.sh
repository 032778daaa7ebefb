#!/usr/bin/env bash
# MaPLe cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/maple/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_c2_ep5_batch4_2ctx_cross_datasets)
# Output: $OUTPUT/imagenet/MaPLe/CFG_${SHOTS}shots/seedSEED
source "$(dirname "$0")/../common.sh"
xd_train MaPLe "$1" "${2:-vit_b16_c2_ep5_batch4_2ctx_cross_datasets}"
