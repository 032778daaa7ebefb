#!/usr/bin/env bash
# AttnMMAdapter base-to-novel, step 2: eval-only on the new classes with the base-trained adapter.
#   bash scripts/attn_mm_adapter/base2new_test.sh DATASET SEED [CFG] [LOADEP]
# LOADEP defaults to "best" (model-best.pth.tar) for best-val configs, else to the newest checkpoint.
# Output: $OUTPUT/base2new/test_new/DATASET/shots_$SHOTS/AttnMMAdapter/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
b2n_test AttnMMAdapter "$1" "$2" "${3:-}" "${4:-}"
