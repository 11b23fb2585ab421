"""The ``instseg`` command line. Stage modules are imported inside each command, so ``--help``
and ``doctor`` stay fast and a broken optional stage cannot break the others."""

import argparse
import logging
import sys
import warnings

from instseg.cli.dataset import add_dataset_command
from instseg.cli.predict import add_predict_command, add_segment_command

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
        from instseg.engine.evaluate import format_results

        print(format_results(results, per_class=False))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from instseg.engine.evaluate import EvalRequest, format_results, run_evaluation

    request = EvalRequest(
        config_files=args.config,
        opts=args.opts,
        weights=args.weights,
        dataset=args.dataset,
        output_dir=args.output,
    )
    results, results_path = run_evaluation(request)
    print(format_results(results))
    print(f"results: {results_path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from instseg.demo import run_demo

    summary = run_demo(
        args.output, quick=args.quick, weights=args.weights, iterations=args.iterations
    )
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

    add_dataset_command(commands)

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
    add_segment_command(commands)

    demo = commands.add_parser(
        "demo",
        help="run everything on the built-in sample dataset (offline) and write a report",
    )
    demo.add_argument("--output", default="output/demo", help="demo folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="short schedule: a few minutes on a CPU")
    demo.add_argument("--weights", help="fine-tune from this checkpoint instead of from scratch")
    demo.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="train N iterations instead of the schedule's (the U-Net a third as many)",
    )
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
