#!/usr/bin/env bash
# Annotate every video in a folder with a trained run's model.
#
#   scripts/annotate_videos.sh VIDEOS_DIR RUN_DIR [OUT_DIR] [extra args for instseg predict]
#
# VIDEOS_DIR  folder of videos (.mp4, .mov, .mkv, ...); images in it are predicted too (one job)
# RUN_DIR     a finished `instseg train` run: RUN_DIR/config.yaml and RUN_DIR/model_final.pth
# OUT_DIR     where NAME.mp4 and NAME.predictions.jsonl go (default: RUN_DIR/videos)
#
# Extra arguments go to `instseg predict` unchanged, e.g.
#   scripts/annotate_videos.sh clips/ output/run1 out/ --frame-stride 2 --codec mp4v \
#       MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.6
# The exit status is instseg's: non-zero when any video failed.
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && usage 0
[[ $# -lt 2 ]] && usage 2

videos_dir=$1
run_dir=$2
shift 2
out_dir="$run_dir/videos"
if [[ $# -gt 0 && "$1" != -* ]]; then
    out_dir=$1
    shift
fi

for path in "$run_dir/config.yaml" "$run_dir/model_final.pth"; do
    if [[ ! -f "$path" ]]; then
        echo "error: $path not found (is $run_dir a finished training run?)" >&2
        exit 2
    fi
done
if [[ ! -d "$videos_dir" ]]; then
    echo "error: $videos_dir is not a folder" >&2
    exit 2
fi

# The project's virtual environment when there is one, else instseg from PATH.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
instseg="$repo_root/.venv/bin/instseg"
[[ -x "$instseg" ]] || instseg=instseg

exec "$instseg" predict \
    --config "$run_dir/config.yaml" \
    --weights "$run_dir/model_final.pth" \
    --output "$out_dir" \
    "$videos_dir" \
    "$@"
