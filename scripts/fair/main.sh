#!/usr/bin/env bash
# FAIR: bash scripts/fair/main.sh <dataset> <cfg> [KEY VALUE ...]
# Adapts on the unlabelled train split (the spec's setting). With `DATASET.ADAPT_SPLIT test` (transductive) runs go
# to $OUTPUT/<dataset>/FAIR/<cfg>_transductive/seed<S>/ so the two protocols never mix. With
# `TRAINER.FAIR.DESCRIPTIONS_FALLBACK template` (template sentences where no description file is found) the run name
# gets `_templatedesc` (after `_transductive`), so such runs get their own row in the results table.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 2 ]] || usage_exit "bash scripts/fair/main.sh <dataset> <cfg> [KEY VALUE ...]"
dataset="$1"; cfg="$2"; shift 2
run_name="$cfg"
[[ "$(opt_value DATASET.ADAPT_SPLIT "$@" | tail -n 1)" == "test" ]] && run_name="${cfg}_transductive"
[[ "$(opt_value TRAINER.FAIR.DESCRIPTIONS_FALLBACK "$@" | tail -n 1)" == "template" ]] && run_name="${run_name}_templatedesc"
run_seeds FAIR "$dataset" "$cfg" "$run_name" -- "$@"
