#!/usr/bin/env bash
# AttnMMAdapter base-to-novel on all 11 datasets for one seed on one GPU: train on base, then test on new.
#   bash scripts/attn_mm_adapter/base2new_all.sh GPU SEED
# (Default config vit_b16_paper; for an ablation config call base2new_{train,test}.sh DATASET SEED CFG.)
source "$(dirname "$0")/../common.sh"
need_args 2 "GPU SEED" "$@"
all_base2new "$(dirname "$0")" "$1" "$2"
