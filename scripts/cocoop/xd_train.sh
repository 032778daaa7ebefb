#!/usr/bin/env bash
# CoCoOp cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/cocoop/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_c4_ep10_batch1_ctxv1)
# Output: $OUTPUT/imagenet/CoCoOp/CFG_${SHOTS}shots/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train CoCoOp "$1" "${2:-}"
