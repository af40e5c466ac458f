#!/usr/bin/env bash
# TipAdapterF: bash scripts/tipadapterf/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]
# Tip-Adapter-F: fine-tunes the cache keys of <shots> labelled images per class
# (DATASET.NUM_SHOTS <shots>, seeded by the seed; DAC's few-shot sets and cached features), searches alpha/beta on
# val, reports the test accuracy. Runs go to $OUTPUT/<dataset>/TipAdapterF/<cfg>_<shots>shots/seed<S>/.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
run_fewshot TipAdapterF "bash scripts/tipadapterf/main.sh <dataset> <cfg> <shots> [KEY VALUE ...]" "$@"
