#!/usr/bin/env bash
# AttnMMAdapter cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/attn_mm_adapter/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_paper)
# Output: $OUTPUT/imagenet/AttnMMAdapter/CFG_${SHOTS}shots/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train AttnMMAdapter "$1" "${2:-}"
