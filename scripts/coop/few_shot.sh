#!/usr/bin/env bash
# CoOp few-shot (the CoOp paper): train on all classes with SHOTS images per class, then test.
#   bash scripts/coop/few_shot.sh DATASET SEED SHOTS [CFG] [NCTX] [CSC] [CTP]
# CFG defaults by shot count as in the reference: 1 shot vit_b16_ep50, 2 and 4 shots vit_b16_ep100,
# 8 and 16 shots vit_b16; ImageNet vit_b16_ep50 for every shot count. NCTX (M, default 16), CSC
# (class-specific context, default False) and CTP (class token position end/middle/front, default
# end) select the paper's variants; a *_ctxv1 CFG sets M = 4 itself. The reference loops SHOTS over
# 1 2 4 8 16 and SEED over 1 2 3.
# Output: $OUTPUT/few_shot/DATASET/shots_SHOTS/CoOp/CFG/nctxNCTX_cscCSC_ctpCTP/seedSEED
source "$(dirname "$0")/../common.sh"
DATASET=$1
SEED=$2
SHOTS=$3
case "$SHOTS" in
    1) DEFAULT_CFG=vit_b16_ep50 ;;
    2 | 4) DEFAULT_CFG=vit_b16_ep100 ;;
    *) DEFAULT_CFG=vit_b16 ;;
esac
if [ "$DATASET" = imagenet ]; then DEFAULT_CFG=vit_b16_ep50; fi
CFG=${4:-$DEFAULT_CFG}
NCTX=${5:-16}
CSC=${6:-False}
CTP=${7:-end}
train_run CoOp "$DATASET" "$CFG" "$SEED" \
    "$OUTPUT/few_shot/$DATASET/shots_$SHOTS/CoOp/$CFG/nctx${NCTX}_csc${CSC}_ctp${CTP}/seed$SEED" \
    DATASET.NUM_SHOTS "$SHOTS" TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" \
    TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP"
