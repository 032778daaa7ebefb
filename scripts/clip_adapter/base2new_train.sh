#!/usr/bin/env bash
# CLIP-Adapter base-to-novel, step 1: train on the base classes (then test on the base test split).
#   bash scripts/clip_adapter/base2new_train.sh DATASET SEED [CFG]
# CFG defaults to vit_b16 (vit_b16_ep50 for imagenet). Env: DATA, OUTPUT, GPU, OPTS, SHOTS (scripts/common.sh).
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/CLIP_Adapter/CFG/seedSEED
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG]" "$@"
DATASET=$1
SEED=$2
if [ "$DATASET" = imagenet ]; then DEFAULT_CFG=vit_b16_ep50; else DEFAULT_CFG=vit_b16; fi
b2n_train CLIP_Adapter "$DATASET" "$SEED" "${3:-$DEFAULT_CFG}"
