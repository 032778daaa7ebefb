#!/usr/bin/env bash
# MMRL cross-dataset / domain generalisation, step 2: eval-only on a target (all classes, full test set,
# class logits only).
#   bash scripts/mmrl/xd_test.sh DATASET SEED [CFG] [LOADEP]      (CFG defaults to vit_b16_cross_datasets)
# DG targets: imagenetv2 imagenet_sketch imagenet_a imagenet_r. LOADEP defaults to the newest checkpoint.
# Passes TASK CD; the YAML's table sets REP_DIM 512 on every target (EuroSAT's default 2048 could not
# load the ImageNet weights).
# Output: $OUTPUT/evaluation/MMRL/CFG_${SHOTS}shots/DATASET/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
xd_test MMRL "$1" "$2" "${3:-}" "${4:-}"
