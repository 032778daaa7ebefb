#!/usr/bin/env bash
# MMRL++ base-to-novel, step 1: train on the base classes (then test on the base test split, fused logits).
#   bash scripts/mmrlpp/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16 (vit_b16_imagenet for imagenet); β and λ come from the per-dataset B2N table.
# Env: DATA, OUTPUT, GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/MMRLpp/CFG/seedSEED
source "$(dirname "$0")/../common.sh"
DATASET=$1
SEED=$2
if [ "$DATASET" = imagenet ]; then DEFAULT_CFG=vit_b16_imagenet; else DEFAULT_CFG=vit_b16; fi
b2n_train MMRLpp "$DATASET" "$SEED" "${3:-$DEFAULT_CFG}" TASK B2N
