#!/usr/bin/env bash
# Zero-shot CLIP: bash scripts/zsclip/main.sh <dataset> <cfg> [KEY VALUE ...]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 2 ]] || usage_exit "bash scripts/zsclip/main.sh <dataset> <cfg> [KEY VALUE ...]"
dataset="$1"; cfg="$2"; shift 2
run_seeds ZSCLIP "$dataset" "$cfg" "$cfg" --eval-only -- "$@"
