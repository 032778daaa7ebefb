#!/usr/bin/env bash
# Protocol functions shared by every method's scripts (source this file, then call one function).
#
# Environment: DATA (data root, default "data"), OUTPUT (default "output"), GPU (sets
# CUDA_VISIBLE_DEVICES), OPTS (extra "KEY VALUE" overrides), SHOTS (default 16), PYTHON.
# A finished run (its finished.json, or a result log written without a run record) is skipped; an
# unfinished one resumes exactly from its last epoch (train.py keeps its old log as
# log.txt-unfinished-<time>; logs are never overwritten). A test step refuses a training run that has
# not finished. train.py refuses a folder whose recorded config differs (see harness/run.py).
# With RUN_QUEUE=FILE, each train.py command line is appended to FILE instead of run;
# `python scripts/run_queue.py FILE` then runs the queue in one process (imports paid once).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA=${DATA:-data}
OUTPUT=${OUTPUT:-output}
SHOTS=${SHOTS:-16}
PYTHON=${PYTHON:-python}
OPTS=${OPTS:-}
if [ -n "${GPU:-}" ]; then export CUDA_VISIBLE_DEVICES=$GPU; fi

B2N_DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
XD_TARGETS="caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"

# run_state DIR: finished, unfinished, legacy (a result log without a run record), foreign or new.
run_state() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m harness.run state "$1"
}

# prepare_run DIR: returns 1 (skip) if the run in DIR finished.
prepare_run() {
    local dir="$1"
    case "$(run_state "$dir")" in
        finished|legacy)
            echo "The results exist at $dir (finished, so skip this job)"
            return 1 ;;
        unfinished)
            echo "Resuming the unfinished run at $dir" ;;
    esac
    return 0
}

# require_trained MODEL_DIR: fail unless the training run in MODEL_DIR finished.
require_trained() {
    case "$(run_state "$1")" in
        finished|legacy) return 0 ;;
        *) echo "error: training of $1 is not finished: run (or resume) its training step first" >&2
           return 1 ;;
    esac
}

# latest_epoch MODEL_DIR: the epoch of the newest checkpoint (from the "checkpoint" pointer file).
latest_epoch() {
    local pointer
    pointer=$(find "$1" -mindepth 2 -maxdepth 2 -name checkpoint | head -n 1)
    if [ -z "$pointer" ]; then
        echo "No checkpoint under $1: train first (or pass LOADEP)" >&2
        return 1
    fi
    head -n 1 "$pointer" | sed 's/^model\.pth\.tar-//'
}

# default_loadep MODEL_DIR: "best" if the run saved model-best.pth.tar (written only when it deploys
# the best-validation model, TEST.FINAL_MODEL best_val), else the newest epoch.
default_loadep() {
    if [ -n "$(find "$1" -mindepth 2 -maxdepth 2 -name model-best.pth.tar | head -n 1)" ]; then
        echo best
    else
        latest_epoch "$1"
    fi
}

# train_py ARGS...: run train.py, or queue the command line when RUN_QUEUE is set.
train_py() {
    if [ -n "${RUN_QUEUE:-}" ]; then
        printf '%q ' "$REPO/train.py" "$@" >> "$RUN_QUEUE"
        echo >> "$RUN_QUEUE"
    else
        "$PYTHON" "$REPO/train.py" "$@"
    fi
}

# train_run TRAINER DATASET CFG SEED DIR [KEY VALUE ...]
train_run() {
    local trainer="$1" dataset="$2" cfg="$3" seed="$4" dir="$5"
    shift 5
    prepare_run "$dir" || return 0
    # shellcheck disable=SC2086
    train_py --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "$REPO/configs/datasets/$dataset.yaml" \
        --config-file "$REPO/configs/trainers/$trainer/$cfg.yaml" \
        --output-dir "$dir" "$@" $OPTS
}

# test_run TRAINER DATASET CFG SEED DIR MODEL_DIR LOADEP [KEY VALUE ...]
test_run() {
    local trainer="$1" dataset="$2" cfg="$3" seed="$4" dir="$5" model_dir="$6" loadep="$7"
    shift 7
    prepare_run "$dir" || return 0
    require_trained "$model_dir"
    if [ -z "$loadep" ]; then loadep=$(default_loadep "$model_dir"); fi
    # LOADEP "best": no --load-epoch, so model-best.pth.tar is loaded (configs with TEST.FINAL_MODEL best_val).
    local load_epoch=(--load-epoch "$loadep")
    if [ "$loadep" = best ]; then load_epoch=(); fi
    # shellcheck disable=SC2086
    train_py --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "$REPO/configs/datasets/$dataset.yaml" \
        --config-file "$REPO/configs/trainers/$trainer/$cfg.yaml" \
        --output-dir "$dir" --model-dir "$model_dir" ${load_epoch[@]+"${load_epoch[@]}"} --eval-only "$@" $OPTS
}

b2n_dir() {  # b2n_dir train_base|test_new TRAINER DATASET CFG SEED
    echo "$OUTPUT/base2new/$1/$3/shots_$SHOTS/$2/$4/seed$5"
}

# The four protocol steps; trailing KEY VALUE pairs are passed on to train.py.
b2n_train() {  # b2n_train TRAINER DATASET SEED CFG [KEY VALUE ...]
    local trainer="$1" dataset="$2" seed="$3" cfg="$4"
    shift 4
    train_run "$trainer" "$dataset" "$cfg" "$seed" "$(b2n_dir train_base "$trainer" "$dataset" "$cfg" "$seed")" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES base "$@"
}

b2n_test() {  # b2n_test TRAINER DATASET SEED CFG [LOADEP] [KEY VALUE ...]  (LOADEP "" = model-best if saved, else latest)
    local trainer="$1" dataset="$2" seed="$3" cfg="$4" loadep="${5:-}"
    shift $(( $# < 5 ? $# : 5 ))
    test_run "$trainer" "$dataset" "$cfg" "$seed" "$(b2n_dir test_new "$trainer" "$dataset" "$cfg" "$seed")" \
        "$(b2n_dir train_base "$trainer" "$dataset" "$cfg" "$seed")" "$loadep" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new "$@"
}

xd_train() {  # xd_train TRAINER SEED CFG [KEY VALUE ...]  (ImageNet, all classes)
    local trainer="$1" seed="$2" cfg="$3"
    shift 3
    train_run "$trainer" imagenet "$cfg" "$seed" "$OUTPUT/imagenet/$trainer/${cfg}_${SHOTS}shots/seed$seed" \
        DATASET.NUM_SHOTS "$SHOTS" "$@"
}

xd_test() {  # xd_test TRAINER DATASET SEED CFG [LOADEP] [KEY VALUE ...]  (all classes, full test set)
    local trainer="$1" dataset="$2" seed="$3" cfg="$4" loadep="${5:-}"
    shift $(( $# < 5 ? $# : 5 ))
    test_run "$trainer" "$dataset" "$cfg" "$seed" "$OUTPUT/evaluation/$trainer/${cfg}_${SHOTS}shots/$dataset/seed$seed" \
        "$OUTPUT/imagenet/$trainer/${cfg}_${SHOTS}shots/seed$seed" "$loadep" "$@"
}

few_shot_train() {  # few_shot_train TRAINER DATASET SEED SHOTS CFG [KEY VALUE ...]  (all classes; trains, then tests)
    local trainer="$1" dataset="$2" seed="$3" shots="$4" cfg="$5"
    shift 5
    train_run "$trainer" "$dataset" "$cfg" "$seed" "$OUTPUT/few_shot/$dataset/shots_$shots/$trainer/$cfg/seed$seed" \
        DATASET.NUM_SHOTS "$shots" "$@"
}

# The per-GPU drivers, through a method's own scripts (so its default configs apply).
all_base2new() {  # all_base2new METHOD_SCRIPT_DIR GPU SEED: every dataset, train on base then test on new
    local here="$1" seed="$3" dataset
    export GPU="$2" CUDA_VISIBLE_DEVICES="$2"
    for dataset in $B2N_DATASETS; do
        bash "$here/base2new_train.sh" "$dataset" "$seed"
        bash "$here/base2new_test.sh" "$dataset" "$seed"
    done
}

all_xd() {  # all_xd METHOD_SCRIPT_DIR GPU SEED: train on ImageNet, test the 10 other datasets and the 4 variants
    local here="$1" seed="$3" dataset
    export GPU="$2" CUDA_VISIBLE_DEVICES="$2"
    bash "$here/xd_train.sh" "$seed"
    for dataset in $XD_TARGETS $DG_TARGETS; do
        bash "$here/xd_test.sh" "$dataset" "$seed"
    done
}
