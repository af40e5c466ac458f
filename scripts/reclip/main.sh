#!/usr/bin/env bash
# ReCLIP: bash scripts/reclip/main.sh <dataset> <cfg> [KEY VALUE ...]
# Transductive by default (adapts on the unlabelled test split). Inductive: add `DATASET.ADAPT_SPLIT train`;
# those runs go to $OUTPUT/<dataset>/ReCLIP/<cfg>_inductive/seed<S>/ so the two protocols never mix.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 2 ]] || usage_exit "bash scripts/reclip/main.sh <dataset> <cfg> [KEY VALUE ...]"
dataset="$1"; cfg="$2"; shift 2
run_name="$cfg"
[[ "$(opt_value DATASET.ADAPT_SPLIT "$@" | tail -n 1)" == "train" ]] && run_name="${cfg}_inductive"
run_seeds ReCLIP "$dataset" "$cfg" "$run_name" -- "$@"
