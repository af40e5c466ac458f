#!/usr/bin/env bash
# DAC: bash scripts/dac/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]
# Few-shot: trains on <shots> labelled images per class (DATASET.NUM_SHOTS <shots>; seeded by the seed), searches
# alpha/beta on val, reports the last epoch's test accuracy. Runs go to $OUTPUT/<dataset>/DAC/<cfg>_<shots>shots/seed<S>/.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
run_fewshot DAC "bash scripts/dac/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]" "$@"
