#!/usr/bin/env bash
# AttnMMAdapter cross-dataset / domain generalisation, step 2: eval-only on a target (all classes, full test set).
#   bash scripts/attn_mm_adapter/xd_test.sh DATASET SEED [CFG] [LOADEP]      (CFG defaults to vit_b16_paper)
# LOADEP defaults to "best" (model-best.pth.tar) for best-val configs, else to the newest checkpoint.
# Output: $OUTPUT/evaluation/AttnMMAdapter/CFG_${SHOTS}shots/DATASET/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 2 "DATASET SEED [CFG] [LOADEP]" "$@"
xd_test AttnMMAdapter "$1" "$2" "${3:-}" "${4:-}"
