#!/usr/bin/env bash
# MMRL++ cross-dataset / domain generalisation, step 1: train on ImageNet (all classes, $SHOTS shots).
#   bash scripts/mmrlpp/xd_train.sh SEED [CFG]      (CFG defaults to vit_b16_cross_datasets)
# No REG_WEIGHT on the command line (unlike MMRL): the CD table's ImageNet λ 0.1 applies, as in the reference.
# Output: $OUTPUT/imagenet/MMRLpp/CFG_${SHOTS}shots/seedSEED
# (Project layout; the reference writes under output/base2new/train_base/imagenet/...)
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "SEED [CFG]" "$@"
xd_train MMRLpp "$1" "${2:-}"
