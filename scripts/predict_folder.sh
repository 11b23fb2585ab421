#!/usr/bin/env bash
# Predict every image below a folder with the model of a training run.
#
#   scripts/predict_folder.sh IMAGES_DIR RUN_DIR [OUT_DIR] [extra args]
#
# IMAGES_DIR  folder searched recursively for images (or any SOURCE `instseg predict` takes)
# RUN_DIR     folder written by `instseg train`: its config.yaml and model_final.pth are used
# OUT_DIR     output folder (default: RUN_DIR/predictions/<name of IMAGES_DIR>); needed
#             before KEY VALUE overrides, which would otherwise be taken for it
# extra args  passed on to `instseg predict`, e.g. --save-masks --score-threshold 0.5
#             --skip-existing, or KEY VALUE config overrides
#
# Exit status: that of `instseg predict` (1 when some input could not be read, 2 on bad usage).
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[[ $# -ge 2 ]] || usage
images_dir=$1
run_dir=${2%/}
shift 2
out_dir="$run_dir/predictions/$(basename "${images_dir%/}")"
if [[ $# -gt 0 && $1 != -* ]]; then
    out_dir=$1
    shift
fi

for file in "$run_dir/config.yaml" "$run_dir/model_final.pth"; do
    [[ -f $file ]] || { echo "error: $file not found (is $run_dir a training run folder?)" >&2; exit 2; }
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
instseg=${INSTSEG:-"$repo_root/.venv/bin/instseg"}
[[ -x $instseg ]] || instseg=instseg

exec "$instseg" predict "$images_dir" \
    --config "$run_dir/config.yaml" \
    --weights "$run_dir/model_final.pth" \
    --output "$out_dir" \
    "$@"
