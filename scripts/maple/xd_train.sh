#!/usr/bin/env bash
# MaPLe cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/maple/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_c2_ep5_batch4_2ctx_cross_datasets)
# Output: $OUTPUT/imagenet/MaPLe/CFG_${SHOTS}shots/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train MaPLe "$1" "${2:-}"
