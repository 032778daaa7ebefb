#!/usr/bin/env bash
# CLIP-Adapter cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/clip_adapter/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_ep50)
# Output: $OUTPUT/imagenet/CLIP_Adapter/CFG_${SHOTS}shots/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train CLIP_Adapter "$1" "${2:-}"
