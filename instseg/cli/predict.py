"""``instseg predict`` on the command line: its options, their config overrides, and the command.

Every config-backed flag becomes a ``KEY VALUE`` override placed after the user's own pairs, so
flags win; options may also follow SOURCE.
"""

from __future__ import annotations

import argparse
import os
import re
import sys


class _OverridesAndLateOptions(argparse.Action):
    """``KEY VALUE`` overrides after SOURCE.

    argparse gives everything after the first positional to a REMAINDER argument, options
    included; those options are parsed here as if given before SOURCE.
    """

    def __init__(self, *args, options_parser: argparse.ArgumentParser, **kwargs):
        super().__init__(*args, **kwargs)
        self.options_parser = options_parser

    def __call__(self, parser, namespace, values, option_string=None):
        existing = getattr(namespace, "existing", None)
        _, overrides = self.options_parser.parse_known_args(list(values), namespace)
        if existing and namespace.existing != existing:
            parser.error("--overwrite and --skip-existing exclude each other")
        unknown = [v for v in overrides if v.startswith("--")]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        sources, overrides = split_sources(overrides)
        namespace.sources = [namespace.source, *sources]
        setattr(namespace, self.dest, overrides)


# A config key as an override names it: upper-case words joined by dots (MODEL.DEVICE).
_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


def split_sources(values: list[str]) -> tuple[list[str], list[str]]:
    """(more SOURCEs, KEY VALUE overrides): everything before the first config key is a SOURCE.

    Raises:
        ConfigError: an argument that is both an existing file and shaped like a config key.
    """
    from instseg.config import ConfigError

    for i, value in enumerate(values):
        if _KEY.fullmatch(value):
            if os.path.exists(value):
                raise ConfigError(
                    f"{value}: both a file and a config key; write ./{value} for the file, or "
                    "put the file before the first KEY VALUE pair"
                )
            return values[:i], values[i:]
    return values, []


def add_predict_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``instseg predict``; each config-backed one overrides its key."""
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="project YAML (required), e.g. RUN/config.yaml; repeat to merge several (later wins)",
    )
    parser.add_argument("--weights", metavar="FILE", help="checkpoint (required)")
    parser.add_argument("--output", metavar="DIR", help="output folder (required)")
    parser.add_argument(
        "--score-threshold",
        type=float,
        metavar="S",
        help="keep instances scoring at least S (MODEL.ROI_HEADS.SCORE_THRESH_TEST)",
    )
    parser.add_argument(
        "--classes",
        metavar="A,B",
        help="keep only these class names (INSTSEG.PREDICT.CLASSES)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="network precision (INSTSEG.PREDICT.PRECISION; auto: bf16 on CPUs with AMX)",
    )
    parser.add_argument(
        "--draw-score",
        type=float,
        metavar="S",
        help="annotated images/videos show instances scoring at least S (default 0.5; "
        "INSTSEG.PREDICT.DRAW_SCORE); the results files keep all above --score-threshold",
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        metavar="N",
        help="at most N instances per image (TEST.DETECTIONS_PER_IMAGE)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="images per forward pass (INSTSEG.PREDICT.BATCH_SIZE)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        metavar="SIZE",
        help="tiled inference for large images: SIZE x SIZE tiles (INSTSEG.PREDICT.TILES.SIZE)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=float,
        metavar="F",
        help="fraction of a tile shared with each neighbour (INSTSEG.PREDICT.TILES.OVERLAP, 0.2)",
    )
    parser.add_argument(
        "--no-full-image",
        action="store_true",
        default=None,
        help="with --tile, tiles only: no whole-image pass for large objects "
        "(INSTSEG.PREDICT.TILES.FULL_IMAGE)",
    )
    parser.add_argument(
        "--no-render",
        action="store_true",
        default=None,
        help="no annotated images (INSTSEG.PREDICT.RENDER)",
    )
    parser.add_argument(
        "--save-masks",
        action="store_true",
        default=None,
        help="write <name>.masks.png instance-id images (INSTSEG.PREDICT.SAVE_MASKS)",
    )
    parser.add_argument(
        "--renderer",
        choices=("auto", "visualizer", "fast"),
        help="drawing: Detectron2's Visualizer, or the fast OpenCV one (INSTSEG.PREDICT.RENDERER)",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite",
        action="store_const",
        dest="existing",
        const="overwrite",
        help="predict everything again into a non-empty output folder",
    )
    existing.add_argument(
        "--skip-existing",
        action="store_const",
        dest="existing",
        const="skip",
        help="predict only inputs an earlier (interrupted) run did not finish",
    )
    parser.add_argument(
        "--coco-json",
        metavar="FILE",
        help="COCO dataset the images belong to: use its image and category ids, so "
        "predictions.json evaluates against it",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        metavar="N",
        help="processes per machine (one per GPU with CUDA)",
    )
    parser.add_argument("--num-machines", type=int, default=None, metavar="N")
    parser.add_argument("--machine-rank", type=int, default=None, metavar="R")
    parser.add_argument("--dist-url", default=None, help="tcp://HOST:PORT of machine 0")
    parser.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    add_video_arguments(parser)


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``instseg predict`` for video inputs; :func:`video_overrides` turns them into
    config overrides. Options left out keep the config's values."""
    group = parser.add_argument_group("video inputs")
    group.add_argument(
        "--frame-stride", type=int, metavar="N", help="process every N-th frame (default 1)"
    )
    group.add_argument("--start", type=float, metavar="SEC", help="first second to process")
    group.add_argument("--end", type=float, metavar="SEC", help="stop before this second")
    group.add_argument(
        "--max-frames", type=int, metavar="N", help="stop after N processed frames per video"
    )
    group.add_argument(
        "--codec",
        choices=("auto", "h264", "mp4v"),
        help="output video codec: h264 (PyAV), mp4v (OpenCV) or auto (h264 when available)",
    )
    group.add_argument(
        "--tracker",
        choices=("hungarian", "none"),
        help="identities across frames (default hungarian): track ids in the JSONL and labels, "
        "NAME.tracks.csv (MOTChallenge) and NAME.tracks.json",
    )


_VIDEO_FLAG_KEYS = (
    ("frame_stride", "INSTSEG.VIDEO.FRAME_STRIDE"),
    ("start", "INSTSEG.VIDEO.START"),
    ("end", "INSTSEG.VIDEO.END"),
    ("max_frames", "INSTSEG.VIDEO.MAX_FRAMES"),
    ("codec", "INSTSEG.VIDEO.CODEC"),
    ("tracker", "INSTSEG.TRACK.METHOD"),
)


def _flag_overrides(args: argparse.Namespace, flag_keys) -> list[str]:
    opts: list[str] = []
    for dest, key in flag_keys:
        value = getattr(args, dest, None)
        if value is not None:
            opts += [key, str(value)]
    return opts


def video_overrides(args: argparse.Namespace) -> list[str]:
    """``KEY VALUE`` overrides for :func:`instseg.config.build_cfg` from the video options."""
    return _flag_overrides(args, _VIDEO_FLAG_KEYS)


# Command-line flags of `instseg predict` and the config keys they set.
_PREDICT_FLAG_KEYS = (
    ("score_threshold", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
    ("max_detections", "TEST.DETECTIONS_PER_IMAGE"),
    ("batch_size", "INSTSEG.PREDICT.BATCH_SIZE"),
    ("renderer", "INSTSEG.PREDICT.RENDERER"),
    ("draw_score", "INSTSEG.PREDICT.DRAW_SCORE"),
    ("precision", "INSTSEG.PREDICT.PRECISION"),
    ("tile", "INSTSEG.PREDICT.TILES.SIZE"),
    ("tile_overlap", "INSTSEG.PREDICT.TILES.OVERLAP"),
)


def build_predict_options(args: argparse.Namespace):
    """The parsed ``instseg predict`` command line as
    :class:`instseg.inference.job.PredictOptions`:
    flags become config overrides placed after the ``KEY VALUE`` pairs, so flags win."""
    from instseg.config import ConfigError
    from instseg.inference.runner import PredictOptions

    command = getattr(args, "command_name", "predict")
    required = ("output",) if command == "segment" else ("config", "weights", "output")
    for flag in required:
        if not getattr(args, flag):
            raise ConfigError(f"{command}: --{flag} is required")
    opts = list(args.opts or [])
    opts += _flag_overrides(args, _PREDICT_FLAG_KEYS) + video_overrides(args)
    if args.classes is not None:
        names = [name.strip() for name in args.classes.split(",") if name.strip()]
        opts += ["INSTSEG.PREDICT.CLASSES", repr(names)]
    if args.no_render:
        opts += ["INSTSEG.PREDICT.RENDER", "False"]
    if args.no_full_image:
        opts += ["INSTSEG.PREDICT.TILES.FULL_IMAGE", "False"]
    if args.save_masks:
        opts += ["INSTSEG.PREDICT.SAVE_MASKS", "True"]
    return PredictOptions(
        output_dir=args.output,
        config_files=list(args.config),
        weights=args.weights,
        opts=opts,
        existing=args.existing or "refuse",
        coco_json=args.coco_json,
        num_workers=1 if args.num_workers is None else args.num_workers,
        num_machines=1 if args.num_machines is None else args.num_machines,
        machine_rank=0 if args.machine_rank is None else args.machine_rank,
        dist_url=args.dist_url or "auto",
        progress=not args.no_progress,
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from instseg.inference.runner import load_predict_cfg, predict
    from instseg.inference.sources import resolve_sources

    options = build_predict_options(args)
    specs = getattr(args, "sources", None) or [args.source]
    source = resolve_sources(specs, exclude=options.output_dir)
    cfg = load_predict_cfg(options)
    try:
        result = predict(cfg, source, options)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished inputs are kept in {options.output_dir}; run the same "
            "command with --skip-existing to predict the rest",
            file=sys.stderr,
        )
        return 130
    if result is None:
        print(f"machine {options.machine_rank}: done; machine 0 writes the results")
        return 0
    for tracks, objects in result.tracked.items():
        print(f"{os.path.join(options.output_dir, tracks)}: {objects}")
    if result.total > result.videos:
        print(result.timing_line())
    print(result.summary_line())
    return result.exit_status


def _add_overrides(parser: argparse.ArgumentParser, prog: str) -> None:
    """Trailing sources, ``KEY VALUE`` overrides and options given after them."""
    late_options = argparse.ArgumentParser(prog=prog, add_help=False)
    add_predict_options(late_options)
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        action=_OverridesAndLateOptions,
        options_parser=late_options,
        metavar="KEY VALUE",
        help="config overrides",
    )


def cmd_segment(args: argparse.Namespace) -> int:
    """``instseg predict`` with a classical method (configs/classical.yaml) instead of a model."""
    from instseg.config import resolve_config_path

    args.config = [str(resolve_config_path("classical")), *args.config]
    args.weights = ""
    args.opts = [
        "MODEL.CLASSICAL.METHOD", args.method,
        "MODEL.CLASSICAL.CLUSTERS", str(args.clusters),
        "MODEL.CLASSICAL.INSTANCES", str(bool(args.instances)),
        *(args.opts or []),
    ]  # fmt: skip
    return cmd_predict(args)


def add_segment_command(commands) -> None:
    """The ``instseg segment`` sub-command: classical methods over the same sources."""
    from instseg.config import CLASSICAL_METHODS

    segment = commands.add_parser(
        "segment",
        help="segment images or videos with a classical method (no training)",
        description="Otsu threshold, k-means colour clusters, watershed or Canny edges over "
        "SOURCE, writing what instseg predict writes: class-id PNGs, overlays, three-panel "
        "figures and predictions.json (with --instances: connected components as instances).",
    )
    segment.add_argument("source", metavar="SOURCE", help="image, folder, glob, list or video")
    segment.add_argument("--method", required=True, choices=CLASSICAL_METHODS)
    segment.add_argument("--clusters", type=int, default=3, help="k-means clusters (default 3)")
    segment.add_argument(
        "--instances", action="store_true", help="objects as instances instead of a class map"
    )
    add_predict_options(segment)
    _add_overrides(segment, "instseg segment")
    segment.set_defaults(func=cmd_segment, existing=None, command_name="segment")


def add_predict_command(commands) -> None:
    """The ``instseg predict`` sub-command, on ``commands`` (argparse sub-parsers)."""
    predict = commands.add_parser(
        "predict",
        help="predict images and videos: files, a folder, a glob or a list of paths",
        description="Predict every image and video of SOURCE (a file, a folder searched "
        "recursively, a glob or a .txt list of paths; images and videos may mix) and write "
        "annotated images and videos, predictions.json (COCO results of the images), one "
        "NAME.predictions.jsonl per video, images.json and manifest.csv under --output.",
    )
    predict.add_argument(
        "source",
        metavar="SOURCE",
        help="image, folder, glob, .txt list or video; several may follow (before KEY VALUE)",
    )
    add_predict_options(predict)
    _add_overrides(predict, "instseg predict")
    predict.set_defaults(func=cmd_predict, existing=None)
