#!/usr/bin/env bash
# CLIP-Adapter base-to-novel, step 2: eval-only on the new classes with the base-trained weights.
#   bash scripts/clip_adapter/base2new_test.sh DATASET SEED [CFG] [LOADEP]
# CFG as in base2new_train.sh; LOADEP defaults to the newest checkpoint of the training run.
# Output: $OUTPUT/base2new/test_new/DATASET/shots_$SHOTS/CLIP_Adapter/CFG/seedSEED
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
DATASET=$1
SEED=$2
if [ "$DATASET" = imagenet ]; then DEFAULT_CFG=vit_b16_ep50; else DEFAULT_CFG=vit_b16; fi
b2n_test CLIP_Adapter "$DATASET" "$SEED" "${3:-$DEFAULT_CFG}" "${4:-}"
