#!/usr/bin/env bash
# The scripts contract shared by every scripts/<method>/main.sh (sourced, not run):
#   run_seeds <TRAINER> <dataset> <cfg> <run_name> [train.py flags ...] -- [KEY VALUE ...]
# Environment: DATA (dataset root, default ./data), OUTPUT (default ./output), SEEDS (default "1 2 3"),
# PYTHON (default python), IMPORT (space-separated modules or .py files, each passed as `train.py --import`, e.g. a
# CoOp checkout's train.py), TRAINER_CONFIGS (folder of <TRAINER>/<cfg>.yaml, default configs/trainers),
# NPROC (processes per node, default 1: data-parallel under torchrun when > 1, e.g. one per GPU) and, for several
# nodes, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (tools.sweep --slurm sets them; docs/DISTRIBUTED.md).
# Output: $OUTPUT/<dataset>/<TRAINER>/<run_name>/seed<S>/ where run_name is <cfg> or <cfg>_<K>shots.
# <dataset>, <TRAINER> and <cfg> are plain names ([A-Za-z0-9_.-]+, no '..').
# Each seed is one train.py call, which decides (docs/RUNS.md): a folder holding this very run (same resolved
# config and backbone sha256), finished, is skipped; unfinished, resumed; a folder holding another run is an error
# naming the differing keys (write elsewhere with OUTPUT=...). train.py's exit code 2 (an input error: config,
# dataset, backbone, another run in the folder) stops the seed loop: every seed would hit it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA:-./data}"
OUTPUT="${OUTPUT:-./output}"
SEEDS="${SEEDS:-1 2 3}"
PYTHON="${PYTHON:-python}"
IMPORT="${IMPORT:-}"
TRAINER_CONFIGS="${TRAINER_CONFIGS:-$REPO/configs/trainers}"
NPROC="${NPROC:-1}"
NNODES="${NNODES:-1}"
DATA="$(realpath -m "$DATA")"      # absolute: the runs below execute from the repository root
OUTPUT="$(realpath -m "$OUTPUT")"
TRAINER_CONFIGS="$(realpath -m "$TRAINER_CONFIGS")"

usage_exit() {
    echo "usage: $1" >&2
    echo "env: DATA (default ./data) OUTPUT (default ./output) SEEDS (default \"1 2 3\")" >&2
    exit 2
}

check_name() {  # <what> <name>: a plain name, so that no path built from it leaves $OUTPUT or configs/
    if ! [[ "$2" =~ ^[A-Za-z0-9_.-]+$ ]] || [[ "$2" == *..* ]]; then
        echo "error: $1 '$2' must be a plain name (letters, digits, '_', '.', '-'; no '/' or '..')" >&2
        exit 2
    fi
}

check_configs() {  # <dataset> <TRAINER> <cfg>
    check_name dataset "$1"
    check_name trainer "$2"
    check_name config "$3"
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

launcher() {  # the command that runs train.py: python, or torchrun with NPROC processes on each of NNODES nodes
    local n
    for n in NPROC NNODES; do
        if ! [[ "${!n}" =~ ^[0-9]+$ ]] || (( ${!n} < 1 )); then
            echo "error: $n must be a positive integer, got '${!n}'" >&2
            exit 2
        fi
    done
    LAUNCH=("$PYTHON")
    if (( NPROC > 1 || NNODES > 1 )); then
        LAUNCH=("$PYTHON" -m torch.distributed.run --nproc_per_node "$NPROC")
        if (( NNODES == 1 )); then
            LAUNCH+=(--standalone)
        else
            if [[ -z "${NODE_RANK:-}" || -z "${MASTER_ADDR:-}" ]]; then
                echo "error: NNODES=$NNODES needs NODE_RANK and MASTER_ADDR (tools.sweep --slurm --nodes sets them)" >&2
                exit 2
            fi
            LAUNCH+=(--nnodes "$NNODES" --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"
                     --master_port "${MASTER_PORT:-29500}")
        fi
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
    launcher
    local failed=0 rc
    for seed in $SEEDS; do
        local dir="$OUTPUT/$dataset/$trainer/$run_name/seed$seed"
        echo "seed $seed: $trainer on $dataset ($run_name) -> $dir"
        rc=0
        (cd "$REPO" && "${LAUNCH[@]}" train.py \
                --root "$DATA" --seed "$seed" --trainer "$trainer" \
                --dataset-config-file "configs/datasets/$dataset.yaml" \
                --config-file "$TRAINER_CONFIGS/$trainer/$cfg.yaml" \
                --output-dir "$dir" "${flags[@]}" "$@") || rc=$?
        if (( rc == 2 )); then  # train.py printed the error; it is the same for every seed
            local rest="${SEEDS#*"$seed"}"
            [[ -n "${rest// /}" ]] && echo "not running seeds${rest}: the error above would stop every seed" >&2
            return 2
        elif (( rc != 0 )); then
            echo "seed $seed: FAILED (exit code $rc, see $dir/log.txt*)" >&2
            failed=1
        fi
    done
    return $failed
}

run_fewshot() {  # <TRAINER> <usage> <dataset> <cfg> <shots> [KEY VALUE ...]: a few-shot method's main.sh
    local trainer="$1" usage="$2"
    shift 2
    [[ $# -ge 3 ]] || usage_exit "$usage"
    local dataset="$1" cfg="$2" shots="$3"
    shift 3
    if ! [[ "$shots" =~ ^[0-9]+$ ]] || (( shots < 1 )); then
        echo "error: <shots> must be a positive integer (1, 2, 4, 8, 16), got '$shots'" >&2
        exit 2
    fi
    if [[ -n "$(opt_value DATASET.NUM_SHOTS "$@")" ]]; then
        echo "error: give the shots as the third argument, not as DATASET.NUM_SHOTS (it names the run folder)" >&2
        exit 2
    fi
    run_seeds "$trainer" "$dataset" "$cfg" "${cfg}_${shots}shots" -- DATASET.NUM_SHOTS "$shots" "$@"
}
