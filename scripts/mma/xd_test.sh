#!/usr/bin/env bash
# MMA cross-dataset / domain generalisation, step 2: eval-only on a target (all classes, full test set).
#   bash scripts/mma/xd_test.sh DATASET SEED [CFG] [LOADEP]      (CFG defaults to vit_b16_xd)
# DG targets: imagenetv2 imagenet_sketch imagenet_a imagenet_r. LOADEP defaults to the newest checkpoint.
# Output: $OUTPUT/evaluation/MultiModalAdapter/CFG_${SHOTS}shots/DATASET/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
xd_test MultiModalAdapter "$1" "$2" "${3:-}" "${4:-}"
