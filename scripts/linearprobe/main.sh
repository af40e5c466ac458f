#!/usr/bin/env bash
# LinearProbe: bash scripts/linearprobe/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]
# Linear probe (lpclip): fits a logistic regression on <shots> labelled images per class
# (DATASET.NUM_SHOTS <shots>, seeded by the seed; DAC's few-shot sets, features cached), searches C on
# val, reports the test accuracy. Runs go to $OUTPUT/<dataset>/LinearProbe/<cfg>_<shots>shots/seed<S>/.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
run_fewshot LinearProbe "bash scripts/linearprobe/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]" "$@"
