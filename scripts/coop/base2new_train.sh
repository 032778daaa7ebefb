#!/usr/bin/env bash
# CoOp base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/coop/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16_ctxv1 (vit_b16_ep50_ctxv1 for imagenet): M = 4 from "a photo of a", the
# CoCoOp paper's CoOp run behind the published base-to-novel numbers (coop.md §7.2).
# Env: DATA, OUTPUT, GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/CoOp/CFG/seedSEED
source "$(dirname "$0")/../common.sh"
DATASET=$1
SEED=$2
if [ "$DATASET" = imagenet ]; then DEFAULT_CFG=vit_b16_ep50_ctxv1; else DEFAULT_CFG=vit_b16_ctxv1; fi
b2n_train CoOp "$DATASET" "$SEED" "${3:-$DEFAULT_CFG}"
