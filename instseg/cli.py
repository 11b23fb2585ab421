"""The ``instseg`` command line. Stage modules are imported inside each command, so ``--help``
and ``doctor`` stay fast and a broken optional stage cannot break the others."""

import argparse
import logging
import sys
import warnings

from instseg.predict_cli import add_predict_command

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
    if not verbose:
        for handler in logging.getLogger("detectron2").handlers:
            handler.addFilter(_not_the_model_summary)


def _not_the_model_summary(record: logging.LogRecord) -> bool:
    """Detectron2 logs the whole model (~300 lines) when it builds one: log.txt keeps it (its
    file handler is added later, without this filter), the terminal does not."""
    return not str(record.msg).startswith("Model:\n")


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


def cmd_dataset_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instseg.data.merge import merge_coco
    from instseg.errors import ConfigError
    from instseg.io.atomic import atomic_write_json

    out = Path(args.out)
    if any(out.resolve() == Path(p).resolve() for p in args.json):
        raise ConfigError(f"{out}: --out is one of the inputs; write the merge to a new file")
    merged = merge_coco(args.json, args.prefix or None)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, merged.coco)
    for path, images, instances in merged.counts:
        print(f"{path}: {images} images, {instances} instances")
    per_class = ", ".join(f"{name} {count}" for name, count in merged.per_class().items())
    coco = merged.coco
    print(f"{out}: {len(coco['images'])} images, {len(coco['annotations'])} instances")
    print(f"classes: {per_class}")
    return 0


def cmd_dataset_split(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instseg.data.split import split_coco, split_config_yaml
    from instseg.errors import ConfigError
    from instseg.io.atomic import atomic_write_json, atomic_write_text

    if args.config_out and not args.images:
        raise ConfigError("--config-out needs --images (the image root the splits share)")
    result = split_coco(args.json, val=args.val, test=args.test, seed=args.seed)
    out = Path(args.out)
    files = {split: out / f"{split}.json" for split in result.parts}
    targets = [*files.values(), *([Path(args.config_out)] if args.config_out else [])]
    for path in targets:
        if path.resolve() == Path(args.json).resolve():
            raise ConfigError(f"{path}: would overwrite the input; choose another --out")
        if path.exists() and not args.overwrite:
            raise ConfigError(f"{path}: exists; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        atomic_write_json(path, result.parts[split])
    counts = result.counts()
    names = list(result.class_names.values())
    width = max(len("class"), *(len(n) for n in names))
    print(f"{'':{width}}  " + "  ".join(f"{split:>7}" for split in counts))
    print(f"{'images':{width}}  " + "  ".join(f"{n:>7}" for n, _ in counts.values()))
    for name in names:
        print(f"{name:{width}}  " + "  ".join(f"{c[name]:>7}" for _, c in counts.values()))
    for path in files.values():
        print(f"wrote {path}")
    if args.config_out:
        config = Path(args.config_out)
        config.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config, split_config_yaml(files, args.images, Path(args.json).stem))
        print(f"wrote {config}")
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

    dataset = commands.add_parser(
        "dataset", help="check, summarise, split, merge or generate COCO datasets"
    )
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
    merge = dataset_commands.add_parser(
        "merge", help="merge COCO JSONs: categories by name, ids renumbered"
    )
    merge.add_argument("json", nargs="+", metavar="JSON", help="COCO instances JSON files")
    merge.add_argument("--out", required=True, help="merged COCO JSON to write")
    merge.add_argument(
        "--prefix",
        action="append",
        metavar="FOLDER",
        help="folder prepended to one input's file names; once per input, in order",
    )
    merge.set_defaults(func=cmd_dataset_merge)
    split = dataset_commands.add_parser(
        "split", help="split a COCO JSON into train/val(/test), stratified by class"
    )
    split.add_argument("--json", required=True, help="COCO instances JSON to split")
    split.add_argument("--out", required=True, help="folder for train.json, val.json (test.json)")
    split.add_argument("--val", type=float, default=0.2, help="val fraction (default: %(default)s)")
    split.add_argument("--test", type=float, default=0.0, help="test fraction (default: none)")
    split.add_argument("--seed", type=int, default=0, help="same seed, same files")
    split.add_argument("--images", help="image root, for --config-out")
    split.add_argument("--config-out", metavar="FILE", help="write a project YAML declaring them")
    split.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    split.set_defaults(func=cmd_dataset_split)

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

    add_predict_command(commands)

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

    try:
        args = build_parser().parse_args(argv)  # an argument may be checked while parsed
        _setup_logging(args.verbose)
        return args.func(args)
    except InstsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
