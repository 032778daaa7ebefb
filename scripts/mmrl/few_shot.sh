#!/usr/bin/env bash
# MMRL few-shot: train on all classes with SHOTS images per class, then test (fused logits).
#   bash scripts/mmrl/few_shot.sh DATASET SEED SHOTS [CFG]
# CFG defaults to vit_b16_few_shot (vit_b16_imagenet for imagenet). The reference loops SHOTS over
# 1 2 4 8 16 and SEED over 1 2 3.
# Output: $OUTPUT/few_shot/DATASET/shots_SHOTS/MMRL/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 3 "DATASET SEED SHOTS [CFG]" "$@"
fewshot_train MMRL "$1" "$2" "$3" "${4:-}"
