#!/usr/bin/env bash
# MaPLe base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/maple/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16_c2_ep5_batch4_2ctx (all 11 datasets, ImageNet included). Env: DATA, OUTPUT,
# GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/MaPLe/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train MaPLe "$1" "$2" "${3:-}"
