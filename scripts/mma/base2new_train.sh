#!/usr/bin/env bash
# MMA base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/mma/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16_ep5 (vit_b16_ep5_imnet for imagenet). Env: DATA, OUTPUT, GPU, OPTS, SHOTS, DRY_RUN (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/MultiModalAdapter/CFG/seedSEED
# (Unified project layout with a <cfg> level; the reference's MMA folders have none.)
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train MultiModalAdapter "$1" "$2" "${3:-}"
