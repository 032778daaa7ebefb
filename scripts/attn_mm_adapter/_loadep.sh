#!/usr/bin/env bash
# default_loadep CFG: "best" for configs that deploy the best-val model (TEST.FINAL_MODEL best_val,
# e.g. with early stopping, where the last-epoch file may never be written), else "" (= latest).
default_loadep() {
    if grep -q 'FINAL_MODEL: *"best_val"' "$REPO/configs/trainers/AttnMMAdapter/$1.yaml"; then echo best; fi
}
