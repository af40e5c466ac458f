#!/usr/bin/env bash
# TipAdapter: bash scripts/tipadapter/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]
# Training-free Tip-Adapter: builds the cache model of <shots> labelled images per class
# (DATASET.NUM_SHOTS <shots>, seeded by the seed; DAC's few-shot sets and cached features), searches alpha/beta on
# val, reports the test accuracy. Runs go to $OUTPUT/<dataset>/TipAdapter/<cfg>_<shots>shots/seed<S>/.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 3 ]] || usage_exit "bash scripts/tipadapter/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]"
dataset="$1"; cfg="$2"; shots="$3"; shift 3
if ! [[ "$shots" =~ ^[0-9]+$ ]] || (( shots < 1 )); then
    echo "error: <shots> must be a positive integer (1, 2, 4, 8, 16), got '$shots'" >&2
    exit 2
fi
if [[ -n "$(opt_value DATASET.NUM_SHOTS "$@")" ]]; then
    echo "error: give the shots as the third argument, not as DATASET.NUM_SHOTS (it names the run folder)" >&2
    exit 2
fi
run_seeds TipAdapter "$dataset" "$cfg" "${cfg}_${shots}shots" -- DATASET.NUM_SHOTS "$shots" "$@"
