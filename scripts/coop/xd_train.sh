#!/usr/bin/env bash
# CoOp cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/coop/xd_train.sh SEED [CFG]
# CFG defaults to vit_b16_ep50_ctxv1 (M = 4, the CoCoOp paper's baseline). The CoOp paper's
# distribution-shift model (M = 16, random init) is CFG vit_b16_ep50, tested with the same CFG.
# Output: $OUTPUT/imagenet/CoOp/CFG_${SHOTS}shots/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train CoOp "$1" "${2:-}"
