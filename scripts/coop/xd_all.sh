#!/usr/bin/env bash
# CoOp cross-dataset and domain generalisation for one seed on one GPU: train on ImageNet, then
# test on the 10 other datasets and the 4 ImageNet variants.
#   bash scripts/coop/xd_all.sh GPU SEED
source "$(dirname "$0")/../common.sh"
need_args 2 "GPU SEED" "$@"
all_xd "$(dirname "$0")" "$1" "$2"
