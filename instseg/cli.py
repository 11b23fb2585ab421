"""The ``instseg`` command line. Stage modules are imported inside each command, so ``--help``
and ``doctor`` stay fast and a broken optional stage cannot break the others."""

import argparse
import logging
import sys
import warnings
from pathlib import Path

logger = logging.getLogger("instseg")

# Known import-time noise from dependencies that users cannot act on.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


def _setup_logging(verbose: bool = False) -> None:
    from detectron2.utils.logger import setup_logger

    level = logging.DEBUG if verbose else logging.INFO
    setup_logger(name="instseg", abbrev_name="instseg", configure_stdout=True).setLevel(level)
    setup_logger(name="detectron2", abbrev_name="d2", configure_stdout=True).setLevel(level)
    setup_logger(name="fvcore", configure_stdout=True).setLevel(logging.WARNING)


def _add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        required=required,
        metavar="FILE",
        help="project YAML; repeat to merge several (later wins)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="overrides")


def cmd_doctor(args: argparse.Namespace) -> int:
    from instseg.doctor import collect_environment, format_environment

    print(format_environment(collect_environment()))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from instseg.config import build_cfg

    print(build_cfg(args.config, args.opts).dump(), end="")
    return 0


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from instseg.data.validate import has_errors, validate_coco_dataset

    problems = validate_coco_dataset(args.json, args.images)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    print(f"{args.json}: {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if has_errors(problems) else 0


def cmd_dataset_stats(args: argparse.Namespace) -> int:
    from instseg.data.stats import format_dataset_stats, load_dataset_stats

    print(format_dataset_stats(load_dataset_stats(args.json)))
    return 0


def cmd_dataset_sample(args: argparse.Namespace) -> int:
    from instseg.data.sample_data import write_sample_dataset

    kwargs = {"seed": args.seed}
    if args.num_train is not None:
        kwargs["num_train"] = args.num_train
    if args.num_val is not None:
        kwargs["num_val"] = args.num_val
    sample = write_sample_dataset(args.out, **kwargs)
    print(f"train: {sample.train_json} ({sample.train_images})")
    print(f"val:   {sample.val_json} ({sample.val_images})")
    print(f"classes: {', '.join(sample.class_names)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from instseg.engine.trainer import TrainRequest, launch_training

    request = TrainRequest(
        config_files=args.config,
        opts=args.opts,
        output_dir=args.output,
        weights=args.weights,
        resume=args.resume,
    )
    results = launch_training(
        request,
        num_gpus=args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
    )
    if results:
        from instseg.engine.evaluate import format_ap_table

        print(format_ap_table(results))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from instseg.engine.evaluate import (
        EvalRequest,
        format_ap_table,
        format_per_class_ap,
        run_evaluation,
    )

    request = EvalRequest(
        config_files=args.config,
        opts=args.opts,
        weights=args.weights,
        dataset=args.dataset,
        output_dir=args.output,
    )
    results, results_path = run_evaluation(request)
    print(format_ap_table(results))
    print(format_per_class_ap(results))
    print(f"results: {results_path}")
    return 0


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
        setattr(namespace, self.dest, overrides)


def _add_predict_options(parser: argparse.ArgumentParser) -> None:
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
        help="processes (one per GPU with CUDA)",
    )
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


_VIDEO_FLAG_KEYS = (
    ("frame_stride", "INSTSEG.VIDEO.FRAME_STRIDE"),
    ("start", "INSTSEG.VIDEO.START"),
    ("end", "INSTSEG.VIDEO.END"),
    ("max_frames", "INSTSEG.VIDEO.MAX_FRAMES"),
    ("codec", "INSTSEG.VIDEO.CODEC"),
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
)


def build_predict_options(args: argparse.Namespace):
    """The parsed ``instseg predict`` command line as :class:`instseg.predict.PredictOptions`:
    flags become config overrides placed after the ``KEY VALUE`` pairs, so flags win."""
    from instseg.config import ConfigError
    from instseg.inference.predict import PredictOptions

    for flag in ("config", "weights", "output"):
        if not getattr(args, flag):
            raise ConfigError(f"predict: --{flag} is required")
    opts = list(args.opts or [])
    opts += _flag_overrides(args, _PREDICT_FLAG_KEYS) + video_overrides(args)
    if args.classes is not None:
        names = [name.strip() for name in args.classes.split(",") if name.strip()]
        opts += ["INSTSEG.PREDICT.CLASSES", repr(names)]
    if args.no_render:
        opts += ["INSTSEG.PREDICT.RENDER", "False"]
    if args.save_masks:
        opts += ["INSTSEG.PREDICT.SAVE_MASKS", "True"]
    return PredictOptions(
        output_dir=args.output,
        config_files=list(args.config),
        weights=args.weights,
        opts=opts,
        existing=args.existing or "refuse",
        coco_json=args.coco_json,
        num_workers=args.num_workers or 1,
        progress=not args.no_progress,
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from instseg.inference.predict import load_predict_cfg, predict_images
    from instseg.inference.sources import resolve_source

    options = build_predict_options(args)
    source = resolve_source(args.source, exclude=options.output_dir)
    cfg = load_predict_cfg(options)
    if source.kind == "videos":
        # Same output-folder rules and config.yaml as for images; instseg.video does the rest.
        from instseg.config import save_cfg
        from instseg.inference.output_dir import check_output_dir
        from instseg.inference.video import predict_videos

        check_output_dir(options.output_dir, options.existing)
        results = predict_videos(
            cfg,
            [f.path for f in source.files],
            options.output_dir,
            overwrite=options.overwrite,
            rels=[f.rel for f in source.files],
            progress=options.progress,
        )
        save_cfg(cfg, Path(options.output_dir) / "config.yaml")
        failed = [r for r in results if not r.ok]
        skipped = sum(r.skipped for r in results)
        ok = len(results) - len(failed) - skipped
        print(f"{len(results)} video(s): {ok} ok, {skipped} skipped, {len(failed)} failed")
        return 1 if failed else 0
    try:
        result = predict_images(cfg, source, options)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished inputs are kept in {options.output_dir}; run the same "
            "command with --skip-existing to predict the rest",
            file=sys.stderr,
        )
        return 130
    print(result.timing_line())
    print(result.summary_line())
    return result.exit_status


def cmd_demo(args: argparse.Namespace) -> int:
    from instseg.demo import run_demo

    summary = run_demo(args.output, quick=args.quick, weights=args.weights)
    for line in summary.lines():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instseg",
        description="Fine-tune Detectron2's Mask R-CNN on COCO-format data, predict image "
        "folders, annotate videos.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="print versions, device and available features")
    doctor.set_defaults(func=cmd_doctor)

    config = commands.add_parser("config", help="inspect merged configs")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the merged config")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)

    dataset = commands.add_parser("dataset", help="check, summarise or generate COCO datasets")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    validate = dataset_commands.add_parser("validate", help="report every problem in a dataset")
    validate.add_argument("--json", required=True, help="COCO instances JSON")
    validate.add_argument("--images", required=True, help="image root folder")
    validate.set_defaults(func=cmd_dataset_validate)
    stats = dataset_commands.add_parser("stats", help="per-class counts and object sizes")
    stats.add_argument("--json", required=True, help="COCO instances JSON")
    stats.set_defaults(func=cmd_dataset_stats)
    sample = dataset_commands.add_parser("sample", help="write the built-in sample dataset")
    sample.add_argument("--out", required=True, help="output folder")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--num-train", type=int, default=None)
    sample.add_argument("--num-val", type=int, default=None)
    sample.set_defaults(func=cmd_dataset_sample)

    train = commands.add_parser("train", help="fine-tune Mask R-CNN on the config's datasets")
    train.add_argument("--output", help="run folder (OUTPUT_DIR)")
    train.add_argument("--weights", help="initial weights: zoo config name, URL or file")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    train.add_argument("--num-machines", type=int, default=1)
    train.add_argument("--machine-rank", type=int, default=0)
    train.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0")
    _add_config_args(train)
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="COCO bbox/segm AP of a checkpoint")
    evaluate.add_argument("--weights", required=True, help="checkpoint to evaluate")
    evaluate.add_argument("--dataset", help="registered dataset name (default: the val set)")
    evaluate.add_argument("--output", help="folder for results (default: beside the weights)")
    _add_config_args(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    predict = commands.add_parser(
        "predict",
        help="predict image files, a folder, a glob or a list of paths (or videos)",
        description="Predict every image of SOURCE (an image, a folder searched recursively, a "
        "glob, a .txt list of paths, or videos) and write annotated images, predictions.json "
        "(COCO results), images.json and manifest.csv under --output.",
    )
    predict.add_argument("source", metavar="SOURCE", help="image, folder, glob, .txt list or video")
    _add_predict_options(predict)
    late_options = argparse.ArgumentParser(prog="instseg predict", add_help=False)
    _add_predict_options(late_options)
    predict.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        action=_OverridesAndLateOptions,
        options_parser=late_options,
        metavar="KEY VALUE",
        help="config overrides",
    )
    predict.set_defaults(func=cmd_predict, existing=None)

    demo = commands.add_parser(
        "demo",
        help="run everything on the built-in sample dataset (offline) and write a report",
    )
    demo.add_argument("--output", default="output/demo", help="demo folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="short schedule: a few minutes on a CPU")
    demo.add_argument("--weights", help="fine-tune from this checkpoint instead of from scratch")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from instseg.errors import InstsegError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except InstsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
