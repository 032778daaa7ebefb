#!/usr/bin/env bash
# MMRL cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/mmrl/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_cross_datasets)
# Passes TASK CD; λ 0.2 is the YAML's ImageNet table entry (the reference script passes it on the command line).
# Output: $OUTPUT/imagenet/MMRL/CFG_${SHOTS}shots/seedSEED
# (Project layout; the reference writes under output/base2new/train_base/imagenet/...)
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train MMRL "$1" "${2:-}"
