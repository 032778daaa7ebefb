#!/usr/bin/env bash
# Zero-shot CLIP on one dataset: zeroshot.sh DATASET [CFG] [SUBSAMPLE]
#   CFG: a config in configs/trainers/ZeroshotCLIP/ (default vit_b16); SUBSAMPLE: all (default), base or new.
# Output: $OUTPUT/zeroshot/<dataset>/ZeroshotCLIP/<cfg>_<subsample>/log.txt
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 1 "DATASET [CFG] [SUBSAMPLE]" "$@"
zeroshot_eval ZeroshotCLIP "$1" "${2:-}" "${3:-all}"
