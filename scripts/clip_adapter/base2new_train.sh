#!/usr/bin/env bash
# CLIP-Adapter base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/clip_adapter/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16 (vit_b16_ep50 for imagenet). Env: DATA, OUTPUT, GPU, OPTS, SHOTS, DRY_RUN (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/CLIP_Adapter/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train CLIP_Adapter "$1" "$2" "${3:-}"
