#!/usr/bin/env bash
# CoCoOp base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/cocoop/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16_c4_ep10_batch1_ctxv1 for every dataset, ImageNet included (as the reference).
# Env: DATA, OUTPUT, GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/CoCoOp/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train CoCoOp "$1" "$2" "${3:-}"
