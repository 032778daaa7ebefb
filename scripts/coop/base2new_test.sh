#!/usr/bin/env bash
# CoOp base-to-novel, step 2: eval-only on the new classes with the base-trained context.
#   bash scripts/coop/base2new_test.sh DATASET SEED [CFG] [LOADEP]
# CFG as in base2new_train.sh; LOADEP defaults to the newest checkpoint of the training run (its
# MAX_EPOCH: 200, ImageNet 50), not the CoCoOp scripts' hard-coded 10.
# Output: $OUTPUT/base2new/test_new/DATASET/shots_$SHOTS/CoOp/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
b2n_test CoOp "$1" "$2" "${3:-}" "${4:-}"
