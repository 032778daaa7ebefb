#!/usr/bin/env bash
# MMRL base-to-novel, step 2: eval-only on the new classes with the base-trained weights (class logits only).
#   bash scripts/mmrl/base2new_test.sh DATASET SEED [CFG] [LOADEP]
# CFG as in base2new_train.sh; LOADEP defaults to the newest checkpoint of the training run.
# Output: $OUTPUT/base2new/test_new/DATASET/shots_$SHOTS/MMRL/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
b2n_test MMRL "$1" "$2" "${3:-}" "${4:-}"
