#!/usr/bin/env bash
# CoOp base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/coop/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16_ctxv1 (vit_b16_ep50_ctxv1 for imagenet): M = 4 from "a photo of a", the
# CoCoOp paper's CoOp run behind the published base-to-novel numbers (coop.md §7.2).
# Env: DATA, OUTPUT, GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/CoOp/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
b2n_train CoOp "$1" "$2" "${3:-}"
