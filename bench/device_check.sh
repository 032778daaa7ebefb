#!/usr/bin/env bash
# The GPU checks of the project in one run, for a machine with a CUDA device (not yet run on one, so
# its length there is unmeasured; the CPU dry run below takes 4.5 minutes on 2 cores):
#   1. pytest -m gpu: every trainer's amp and fp16 against fp32, GradScaler steps;
#   2. bench/run_all.py in fp32, amp and fp16: train step and evaluation (caches on and off) per trainer;
#   3. bench/bench_e2e.py: one base-to-novel run (train + test) of MMA and MMRL in amp.
# Every output line also goes to OUT_DIR/device_check.log; the exit status is 1 if a step failed.
#
#   bash bench/device_check.sh [OUT_DIR]        # default: $OUT (the device tool's folder) or output/device_check
#
# The device machine has PyTorch but not open_clip_torch, yacs or ftfy: carry their wheels and put
# them on PYTHONPATH first (/work/.library/device/README.md, "a Python package missing there").
# Without a CUDA device the same steps run at test-tiny size in fp32 and amp (a check of this script).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-output/device_check}}
mkdir -p "$out"
log="$out/device_check.log"
: > "$log"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    backbone="ViT-B/16" precs="fp32 amp fp16" iters=5 test_per_class=4
else
    echo "device_check: no CUDA device, so a dry run at test-tiny size (fp32, amp)" | tee -a "$log"
    backbone="test-tiny" precs="fp32 amp" iters=1 test_per_class=1
fi

failed=0
step() {
    echo "== $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    if [ "${PIPESTATUS[0]}" != 0 ]; then
        failed=1
        echo "== FAILED: $*" | tee -a "$log"
    fi
}

step python -m pytest -q -m gpu tests
for prec in $precs; do
    step python bench/run_all.py --prec "$prec" --iters "$iters" --test-per-class "$test_per_class" \
        --backbone "$backbone"
done
for trainer in MultiModalAdapter MMRL; do
    step python bench/bench_e2e.py --trainer "$trainer" --prec amp --classes 10 --shots 4 \
        --test-per-class "$test_per_class" --work-dir "$out/e2e-$trainer" MODEL.BACKBONE.NAME "$backbone"
done
grep '^RESULT' "$log" > "$out/results.txt"
echo "device_check: $(wc -l < "$out/results.txt") measurements in $out/results.txt; $([ $failed = 0 ] && echo 'every step passed' || echo 'a step FAILED')" | tee -a "$log"
exit $failed
