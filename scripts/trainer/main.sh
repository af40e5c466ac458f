#!/usr/bin/env bash
# Any registered Dassl trainer (CoOp, CoCoOp, ... brought in with IMPORT):
#   IMPORT=/path/to/CoOp/train.py TRAINER_CONFIGS=/path/to/CoOp/configs/trainers \
#       bash scripts/trainer/main.sh <TRAINER> <dataset> <cfg> [KEY VALUE ...]
# Runs go to $OUTPUT/<dataset>/<TRAINER>/<cfg>/seed<S>/, or <cfg>_<K>shots/ when DATASET.NUM_SHOTS <K> is given.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 3 ]] || usage_exit "bash scripts/trainer/main.sh <TRAINER> <dataset> <cfg> [KEY VALUE ...]"
trainer="$1"; dataset="$2"; cfg="$3"; shift 3
shots="$(opt_value DATASET.NUM_SHOTS "$@" | tail -n 1)"
run_name="$cfg"
[[ -n "$shots" ]] && run_name="${cfg}_${shots}shots"
run_seeds "$trainer" "$dataset" "$cfg" "$run_name" -- "$@"
