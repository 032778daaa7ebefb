#!/usr/bin/env bash
# MMA cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/mma/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_xd)
# Output: $OUTPUT/imagenet/MultiModalAdapter/CFG_${SHOTS}shots/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train MultiModalAdapter "$1" "${2:-}"
