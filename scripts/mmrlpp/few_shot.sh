#!/usr/bin/env bash
# MMRL++ few-shot: train on all classes with SHOTS images per class, then test (fused logits).
#   bash scripts/mmrlpp/few_shot.sh DATASET SEED SHOTS [CFG]
# CFG defaults to vit_b16_few_shot (LR 2e-3, 100 epochs; vit_b16_imagenet for imagenet); β and λ from
# the per-dataset table (as for base-to-novel). The reference loops SHOTS over 1 2 4 8 16 and SEED over 1 2 3.
# Output: $OUTPUT/few_shot/DATASET/shots_SHOTS/MMRLpp/CFG/seedSEED
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 3 "DATASET SEED SHOTS [CFG]" "$@"
fewshot_train MMRLpp "$1" "$2" "$3" "${4:-}"
