#!/usr/bin/env bash
# CoOp few-shot (the CoOp paper): train on all classes with SHOTS images per class, then test.
#   bash scripts/coop/few_shot.sh DATASET SEED SHOTS [CFG] [NCTX] [CSC] [CTP]
# CFG defaults by shot count as in the reference: 1 shot vit_b16_ep50, 2 and 4 shots vit_b16_ep100,
# 8 and 16 shots vit_b16; ImageNet vit_b16_ep50 for every shot count. NCTX (M, default 16), CSC
# (class-specific context, default False) and CTP (class token position end/middle/front, default
# end) select the paper's variants; a *_ctxv1 CFG sets M = 4 itself. The reference loops SHOTS over
# 1 2 4 8 16 and SEED over 1 2 3.
# Output: $OUTPUT/few_shot/DATASET/shots_SHOTS/CoOp/CFG/seedSEED; a variant other than the default
# (16, False, end) goes to .../CoOp/CFG_nctxNCTX_cscCSC_ctpCTP/seedSEED.
# Default configs and the method's options: harness/protocols.py (METHODS), shared with scripts/benchmark.py.
source "$(dirname "$0")/../common.sh"
need_args 3 "DATASET SEED SHOTS [CFG] [NCTX] [CSC] [CTP]" "$@"
NCTX=${5:-16}
CSC=${6:-False}
CTP=${7:-end}
if [ "$NCTX/$CSC/$CTP" = "16/False/end" ]; then
    fewshot_train CoOp "$1" "$2" "$3" "${4:-}"
    exit 0
fi
CFG=${4:-$(harness_py -c "from harness.protocols import METHODS; print(METHODS['CoOp'].fewshot.cfg_for('$1', $3))")}
train_run CoOp "$1" "$CFG" "$2" "$OUTPUT/few_shot/$1/shots_$3/CoOp/${CFG}_nctx${NCTX}_csc${CSC}_ctp${CTP}/seed$2" \
    DATASET.NUM_SHOTS "$3" TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP"
