#!/usr/bin/env bash
# ReCLIP: bash scripts/reclip/main.sh <dataset> <cfg> [KEY VALUE ...]
# Transductive by default (adapts on the unlabelled test split). Inductive: add `DATASET.ADAPT_SPLIT train`;
# those runs go to $OUTPUT/<dataset>/ReCLIP/<cfg>_inductive/seed<S>/ so the two protocols never mix.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 2 ]] || usage_exit "bash scripts/reclip/main.sh <dataset> <cfg> [KEY VALUE ...]"
dataset="$1"; cfg="$2"; shift 2
run_name="$cfg"
opts=("$@")
for ((i = 0; i + 1 < ${#opts[@]}; i += 2)); do
    if [[ "${opts[i]}" == "DATASET.ADAPT_SPLIT" && "${opts[i+1]}" == "train" ]]; then
        run_name="${cfg}_inductive"
    fi
done
run_seeds ReCLIP "$dataset" "$cfg" "$run_name" -- "$@"
