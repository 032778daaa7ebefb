#!/usr/bin/env bash
# MaPLe cross-dataset / domain generalisation, step 2: eval-only on a target (all classes, full test set).
#   bash scripts/maple/xd_test.sh DATASET SEED [CFG] [LOADEP]
# CFG defaults to vit_b16_c2_ep5_batch4_2ctx_cross_datasets; LOADEP to the newest checkpoint (2).
# DG targets: imagenetv2 imagenet_sketch imagenet_a imagenet_r.
# Output: $OUTPUT/evaluation/MaPLe/CFG_${SHOTS}shots/DATASET/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
xd_test MaPLe "$1" "$2" "${3:-}" "${4:-}"
