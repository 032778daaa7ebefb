#!/usr/bin/env bash
# AttnMMAdapter base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/attn_mm_adapter/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16_paper (early stopping on val, best-val model); vit_b16 = fixed 200 epochs.
# Env: DATA, OUTPUT, GPU, OPTS, SHOTS, DRY_RUN (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/AttnMMAdapter/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train AttnMMAdapter "$1" "$2" "${3:-}"
