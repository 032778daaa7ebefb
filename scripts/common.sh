#!/usr/bin/env bash
# Protocol functions shared by every method's scripts (source this file, then call one function).
#
# The protocols, each trainer's configs and options for them, and the output layout are defined once,
# in harness/protocols.py; these functions ask it for a step's train.py command line
# (`python -m harness.protocols command ...`) and run it. A whole benchmark (every dataset and seed,
# several GPUs or a Slurm cluster) is `python scripts/benchmark.py run ...`.
#
# Environment: DATA (data root, default "data"), OUTPUT (default "output"), GPU (sets
# CUDA_VISIBLE_DEVICES), OPTS (extra "KEY VALUE" overrides, shell words), SHOTS (default 16), PYTHON,
# DRY_RUN (1: print the train.py command line instead of running it).
# A finished run (its finished.json, or a result log written without a run record) is skipped; an
# unfinished one resumes exactly from its last epoch (train.py keeps its old log as
# log.txt-unfinished-<time>; logs are never overwritten). A test step refuses a training run that has
# not finished. train.py refuses a folder whose recorded config differs (see harness/run.py).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA=${DATA:-data}
OUTPUT=${OUTPUT:-output}
SHOTS=${SHOTS:-16}
PYTHON=${PYTHON:-python}
OPTS=${OPTS:-}
if [ -n "${GPU:-}" ]; then export CUDA_VISIBLE_DEVICES=$GPU; fi

harness_py() {  # harness_py ARGS...: python with the repository on the path (the harness is stdlib only)
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"
}

# need_args MIN "ARGS" "$@": a script's first call. With fewer than MIN arguments it prints
# "usage: bash scripts/<method>/<script>.sh ARGS" and exits 2 (with -h or --help: prints it, exits 0).
need_args() {
    local min="$1" usage="usage: bash ${0#"$REPO"/} $2"
    shift 2
    case "${1:-}" in -h|--help) echo "$usage"; exit 0 ;; esac
    if [ "$#" -lt "$min" ]; then
        echo "$usage" >&2
        exit 2
    fi
}

# run_state DIR: finished, unfinished, legacy (a result log without a run record), foreign or new.
run_state() {
    harness_py -m harness.run state "$1"
}

# train_py ARGS...: run train.py (with DRY_RUN=1, print its command line instead).
train_py() {
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '%q ' "$PYTHON" "$REPO/train.py" "$@"
        echo
    else
        "$PYTHON" "$REPO/train.py" "$@"
    fi
}

# protocol_step OPTIONS... [-- KEY VALUE ...]: the step's command line from harness/protocols.py (see
# `python -m harness.protocols command --help`), then skip, resume or run it.
protocol_step() {
    local plan action dir
    plan=$(harness_py -m harness.protocols command --data="$DATA" --output="$OUTPUT" --shots="$SHOTS" \
        --opts="$OPTS" "$@") || return 1
    eval "set -- $plan"
    action="$1" dir="$2"
    shift 2
    case "$action" in
        skip) echo "The results exist at $dir (finished, so skip this job)"; return 0 ;;
        resume) echo "Resuming the unfinished run at $dir" ;;
    esac
    train_py "$@"
}

# train_run TRAINER DATASET CFG SEED DIR [KEY VALUE ...]: a training run into DIR.
train_run() {
    local trainer="$1" dataset="$2" cfg="$3" seed="$4" dir="$5"
    shift 5
    protocol_step --step train --trainer="$trainer" --dataset="$dataset" --cfg="$cfg" --seed="$seed" \
        --dir="$dir" -- "$@"
}

# test_run TRAINER DATASET CFG SEED DIR MODEL_DIR LOADEP [KEY VALUE ...]: an eval-only run of MODEL_DIR's model.
test_run() {
    local trainer="$1" dataset="$2" cfg="$3" seed="$4" dir="$5" model_dir="$6" loadep="$7"
    shift 7
    protocol_step --step test --trainer="$trainer" --dataset="$dataset" --cfg="$cfg" --seed="$seed" --dir="$dir" \
        --model-dir="$model_dir" --load-epoch="$loadep" -- "$@"
}

# The protocol steps. CFG "" = the method's config for the dataset (harness/protocols.py METHODS,
# which also adds the method's options, e.g. MMRL's TASK); LOADEP "" = model-best.pth.tar if the
# training run saved one (TEST.FINAL_MODEL best_val), else its newest epoch. Trailing KEY VALUE pairs
# are passed on to train.py.
b2n_train() {  # b2n_train TRAINER DATASET SEED [CFG] [KEY VALUE ...]
    local trainer="$1" dataset="$2" seed="$3" cfg="${4:-}"
    shift $(( $# < 4 ? $# : 4 ))
    protocol_step --step b2n_train --trainer="$trainer" --dataset="$dataset" --seed="$seed" --cfg="$cfg" -- "$@"
}

b2n_test() {  # b2n_test TRAINER DATASET SEED [CFG] [LOADEP] [KEY VALUE ...]
    local trainer="$1" dataset="$2" seed="$3" cfg="${4:-}" loadep="${5:-}"
    shift $(( $# < 5 ? $# : 5 ))
    protocol_step --step b2n_test --trainer="$trainer" --dataset="$dataset" --seed="$seed" --cfg="$cfg" \
        --load-epoch="$loadep" -- "$@"
}

xd_train() {  # xd_train TRAINER SEED [CFG] [KEY VALUE ...]  (ImageNet, all classes)
    local trainer="$1" seed="$2" cfg="${3:-}"
    shift $(( $# < 3 ? $# : 3 ))
    protocol_step --step xd_train --trainer="$trainer" --seed="$seed" --cfg="$cfg" -- "$@"
}

xd_test() {  # xd_test TRAINER DATASET SEED [CFG] [LOADEP] [KEY VALUE ...]  (all classes, full test set)
    local trainer="$1" dataset="$2" seed="$3" cfg="${4:-}" loadep="${5:-}"
    shift $(( $# < 5 ? $# : 5 ))
    protocol_step --step xd_test --trainer="$trainer" --dataset="$dataset" --seed="$seed" --cfg="$cfg" \
        --load-epoch="$loadep" -- "$@"
}

# fewshot_train TRAINER DATASET SEED SHOTS [CFG] [KEY VALUE ...]: all classes; the training's final test is the result.
fewshot_train() {
    local trainer="$1" dataset="$2" seed="$3" shots="$4" cfg="${5:-}"
    shift $(( $# < 5 ? $# : 5 ))
    SHOTS="$shots" protocol_step --step fewshot_train --trainer="$trainer" --dataset="$dataset" --seed="$seed" \
        --cfg="$cfg" -- "$@"
}

zeroshot_eval() {  # zeroshot_eval TRAINER DATASET [CFG] [SUBSAMPLE]: eval-only, no seed
    protocol_step --step zeroshot --trainer="$1" --dataset="$2" --cfg="${3:-}" --subsample="${4:-all}"
}

# The per-GPU drivers, through a method's own scripts (so its default configs apply).
all_base2new() {  # all_base2new METHOD_SCRIPT_DIR GPU SEED: every dataset, train on base then test on new
    local here="$1" seed="$3" dataset
    export GPU="$2" CUDA_VISIBLE_DEVICES="$2"
    for dataset in $(harness_py -m harness.protocols datasets base2new); do
        bash "$here/base2new_train.sh" "$dataset" "$seed"
        bash "$here/base2new_test.sh" "$dataset" "$seed"
    done
}

all_xd() {  # all_xd METHOD_SCRIPT_DIR GPU SEED: train on ImageNet, test the 10 other datasets and the 4 variants
    local here="$1" seed="$3" dataset
    export GPU="$2" CUDA_VISIBLE_DEVICES="$2"
    bash "$here/xd_train.sh" "$seed"
    for dataset in $(harness_py -m harness.protocols datasets xd); do
        bash "$here/xd_test.sh" "$dataset" "$seed"
    done
}
