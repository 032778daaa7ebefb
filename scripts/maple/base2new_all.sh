#!/usr/bin/env bash
# MaPLe base-to-novel on all 11 datasets for one seed on one GPU: train on base, then test on new.
#   bash scripts/maple/base2new_all.sh GPU SEED
source "$(dirname "$0")/../common.sh"
need_args 2 "GPU SEED" "$@"
all_base2new "$(dirname "$0")" "$1" "$2"
