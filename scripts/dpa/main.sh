#!/usr/bin/env bash
# DPA: bash scripts/dpa/main.sh <dataset> <cfg> [KEY VALUE ...]
# Adapts on the unlabelled train split. With `DATASET.ADAPT_SPLIT test` (transductive) runs go to
# $OUTPUT/<dataset>/DPA/<cfg>_transductive/seed<S>/ so the two protocols never mix.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 2 ]] || usage_exit "bash scripts/dpa/main.sh <dataset> <cfg> [KEY VALUE ...]"
dataset="$1"; cfg="$2"; shift 2
run_name="$cfg"
[[ "$(opt_value DATASET.ADAPT_SPLIT "$@" | tail -n 1)" == "test" ]] && run_name="${cfg}_transductive"
run_seeds DPA "$dataset" "$cfg" "$run_name" -- "$@"
