#!/usr/bin/env bash
# The scripts contract shared by every scripts/<method>/main.sh (sourced, not run):
#   run_seeds <TRAINER> <dataset> <cfg> <run_name> [train.py flags ...] -- [KEY VALUE ...]
# Environment: DATA (dataset root, default ./data), OUTPUT (default ./output), SEEDS (default "1 2 3"),
# PYTHON (default python), IMPORT (space-separated modules or .py files, each passed as `train.py --import`, e.g. a
# CoOp checkout's train.py), TRAINER_CONFIGS (folder of <TRAINER>/<cfg>.yaml, default configs/trainers).
# Output: $OUTPUT/<dataset>/<TRAINER>/<run_name>/seed<S>/ where run_name is <cfg> or <cfg>_<K>shots.
# A seed whose folder holds a finished run is skipped (tools/runs.py decides, one place).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA:-./data}"
OUTPUT="${OUTPUT:-./output}"
SEEDS="${SEEDS:-1 2 3}"
PYTHON="${PYTHON:-python}"
IMPORT="${IMPORT:-}"
TRAINER_CONFIGS="${TRAINER_CONFIGS:-$REPO/configs/trainers}"
DATA="$(realpath -m "$DATA")"      # absolute: the runs below execute from the repository root
OUTPUT="$(realpath -m "$OUTPUT")"
TRAINER_CONFIGS="$(realpath -m "$TRAINER_CONFIGS")"

usage_exit() {
    echo "usage: $1" >&2
    echo "env: DATA (default ./data) OUTPUT (default ./output) SEEDS (default \"1 2 3\")" >&2
    exit 2
}

check_configs() {  # <dataset> <TRAINER> <cfg>
    local ds_cfg="$REPO/configs/datasets/$1.yaml" tr_cfg="$TRAINER_CONFIGS/$2/$3.yaml"
    if [[ ! -f "$ds_cfg" ]]; then
        echo "error: unknown dataset '$1': no $ds_cfg (available: $(ls "$REPO/configs/datasets" | sed 's/\.yaml$//' | tr '\n' ' '))" >&2
        exit 2
    fi
    if [[ ! -f "$tr_cfg" ]]; then
        echo "error: unknown config '$3' for $2: no $tr_cfg (available: $(ls "$TRAINER_CONFIGS/$2" 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' '))" >&2
        exit 2
    fi
}

opt_value() {  # opt_value KEY [KEY VALUE ...]: the value given to KEY in the trailing opts, or nothing
    local key="$1"; shift
    while [[ $# -ge 2 ]]; do
        [[ "$1" == "$key" ]] && echo "$2"
        shift 2
    done
}

run_seeds() {
    local trainer="$1" dataset="$2" cfg="$3" run_name="$4"
    shift 4
    local flags=() module
    for module in $IMPORT; do  # a file path is made absolute: train.py runs from the repository root
        [[ "$module" == *.py || "$module" == */* ]] && module="$(realpath -m "$module")"
        flags+=(--import "$module")
    done
    while [[ $# -gt 0 && "$1" != "--" ]]; do flags+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    check_configs "$dataset" "$trainer" "$cfg"
    local failed=0
    for seed in $SEEDS; do
        local dir="$OUTPUT/$dataset/$trainer/$run_name/seed$seed"
        if (cd "$REPO" && "$PYTHON" -m tools.runs is-finished "$dir"); then
            echo "seed $seed: finished run in $dir, skipping"
            continue
        fi
        echo "seed $seed: running $trainer on $dataset ($run_name) -> $dir"
        if ! (cd "$REPO" && "$PYTHON" train.py \
                --root "$DATA" --seed "$seed" --trainer "$trainer" \
                --dataset-config-file "configs/datasets/$dataset.yaml" \
                --config-file "$TRAINER_CONFIGS/$trainer/$cfg.yaml" \
                --output-dir "$dir" "${flags[@]}" "$@"); then
            echo "seed $seed: FAILED (see $dir/log.txt*)" >&2
            failed=1
        fi
    done
    return $failed
}
