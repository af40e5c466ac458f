#!/usr/bin/env bash
# DAC, out-of-distribution protocol (methods/DAC.md): bash scripts/dac/ood.sh <cfg> <shots> [KEY VALUE ...]
#   1. trains DAC on ImageNet with <shots> images per class (scripts/dac/main.sh; alpha/beta searched on ImageNet's
#      val split) -> $OUTPUT/imagenet/DAC/<cfg>_<shots>shots/seed<S>/
#   2. evaluates each seed's trained model, unchanged, on every target dataset (train.py --eval-only --model-dir
#      <the folder of 1.>: the adapter, the text modulation, the cache model and alpha/beta of that run; classes
#      mapped by name, e.g. ImageNet-A/-R's 200 of the 1000)
#      -> $OUTPUT/<target>/DAC/<cfg>_from_imagenet_<shots>shots/seed<S>/
# Environment (besides DATA, OUTPUT, SEEDS, PYTHON of scripts/common.sh): OOD_SOURCE (default imagenet),
# OOD_TARGETS (default "imagenet_v2 imagenet_sketch imagenet_a imagenet_r"). Finished runs (training or evaluation)
# are skipped; a failed seed does not stop the others; the exit code is 1 if anything failed.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
[[ $# -ge 2 ]] || usage_exit "bash scripts/dac/ood.sh <cfg> <shots> [KEY VALUE ...]   (env: OOD_SOURCE, OOD_TARGETS)"
cfg="$1"; shots="$2"; shift 2
source_ds="${OOD_SOURCE:-imagenet}"
targets="${OOD_TARGETS:-imagenet_v2 imagenet_sketch imagenet_a imagenet_r}"
for target in $targets; do check_configs "$target" DAC "$cfg"; done

failed=0
status=0
bash "$REPO/scripts/dac/main.sh" "$source_ds" "$cfg" "$shots" "$@" || status=$?
(( status == 2 )) && exit 2   # usage or config error (already reported)
(( status != 0 )) && failed=1

for seed in $SEEDS; do
    model_dir="$OUTPUT/$source_ds/DAC/${cfg}_${shots}shots/seed$seed"
    if ! (cd "$REPO" && "$PYTHON" -m tools.runs is-finished "$model_dir"); then
        echo "seed $seed: no finished training run in $model_dir; skipping its OOD evaluation" >&2
        failed=1
        continue
    fi
    for target in $targets; do
        if ! SEEDS="$seed" run_seeds DAC "$target" "$cfg" "${cfg}_from_${source_ds}_${shots}shots" \
                --eval-only --model-dir "$model_dir" -- "$@"; then
            failed=1
        fi
    done
done
exit $failed
