#!/usr/bin/env bash
# CoOp cross-dataset / domain generalisation, step 2: eval-only on a target (all classes, full test set).
#   bash scripts/coop/xd_test.sh DATASET SEED [CFG] [LOADEP]      (CFG defaults to vit_b16_ep50_ctxv1)
# DG targets: imagenetv2 imagenet_sketch imagenet_a imagenet_r. LOADEP defaults to the newest checkpoint.
# Output: $OUTPUT/evaluation/CoOp/CFG_${SHOTS}shots/DATASET/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
xd_test CoOp "$1" "$2" "${3:-}" "${4:-}"
