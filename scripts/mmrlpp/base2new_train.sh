#!/usr/bin/env bash
# MMRL++ base-to-novel, step 1: train on the base classes (then test on the base test split, fused logits).
#   bash scripts/mmrlpp/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16 (vit_b16_imagenet for imagenet); β and λ come from the per-dataset B2N table.
# Env: DATA, OUTPUT, GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/MMRLpp/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train MMRLpp "$1" "$2" "${3:-}"
