#!/usr/bin/env bash
# TipAdapter: bash scripts/tipadapter/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]
# Training-free Tip-Adapter: builds the cache model of <shots> labelled images per class
# (DATASET.NUM_SHOTS <shots>, seeded by the seed; DAC's few-shot sets and cached features), searches alpha/beta on
# val, reports the test accuracy. Runs go to $OUTPUT/<dataset>/TipAdapter/<cfg>_<shots>shots/seed<S>/.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
run_fewshot TipAdapter "bash scripts/tipadapter/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]" "$@"
