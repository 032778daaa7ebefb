#!/usr/bin/env bash
# MMA cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/mma/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_xd)
# Output: $OUTPUT/imagenet/MultiModalAdapter/CFG_${SHOTS}shots/seedSEED
source "$(dirname "$0")/../common.sh"
xd_train MultiModalAdapter "$1" "${2:-}"
