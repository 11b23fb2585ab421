"""``instseg dataset`` on the command line: validate, stats, convert, split, merge, sample."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_dataset_validate(args: argparse.Namespace) -> int:
    from instseg.data.validate import has_errors, validate_coco_dataset

    if not args.json and not args.masks:
        print("error: give --json (COCO instances) or --masks (class-id PNGs)", file=sys.stderr)
        return 2
    problems, checked = [], []
    if args.json:
        problems += validate_coco_dataset(args.json, args.images)
        checked.append(args.json)
    if args.masks:
        from instseg.data.mask_checks import validate_mask_folder

        classes = [c.strip() for c in args.classes.split(",")] if args.classes else []
        problems += validate_mask_folder(args.images, args.masks, classes)
        checked.append(args.masks)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    print(f"{' + '.join(checked)}: {errors} error(s), {len(problems) - errors} warning(s)")
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
    if args.semantic_masks:
        from instseg.data.semantic import coco_semantic_classes, write_semantic_masks

        for split, json_file in (("train", sample.train_json), ("val", sample.val_json)):
            out = Path(args.out) / f"{split}_masks"
            count = write_semantic_masks(json_file, out)
            print(f"{split} masks: {out} ({count} class-id PNGs)")
        print(f"semantic classes: {', '.join(coco_semantic_classes(sample.class_names))}")
    return 0


def cmd_dataset_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instseg.data.coco_json import instances_per_class
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
    per_class = ", ".join(f"{n} {count}" for n, count in instances_per_class(merged.coco).items())
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
    names = result.class_names
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


def cmd_dataset_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from instseg.data.coco_json import instances_per_class
    from instseg.data.convert import convert_dataset
    from instseg.errors import ConfigError
    from instseg.io.atomic import atomic_write_json

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out}: exists; pass --overwrite to replace it")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    result = convert_dataset(
        args.format, args.src, args.images, classes=classes, class_attribute=args.class_attribute
    )
    for dropped in result.dropped:
        print(f"dropped: {dropped}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result.coco)
    coco = result.coco
    print(
        f"{out}: {len(coco['images'])} images, {len(coco['annotations'])} instances, "
        f"{len(result.dropped)} dropped; image root {result.image_root}"
    )
    counts = instances_per_class(coco)
    print("classes: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return 0


def add_dataset_command(commands) -> None:
    dataset = commands.add_parser(
        "dataset", help="check, convert, split, merge, summarise or generate datasets"
    )
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)
    validate = dataset_commands.add_parser("validate", help="report every problem in a dataset")
    validate.add_argument("--json", help="COCO instances JSON")
    validate.add_argument("--images", required=True, help="image root folder")
    validate.add_argument("--masks", help="folder of class-id PNGs named as the images")
    validate.add_argument("--classes", help="with --masks: comma-separated class names, id order")
    validate.set_defaults(func=cmd_dataset_validate)
    stats = dataset_commands.add_parser("stats", help="per-class counts and object sizes")
    stats.add_argument("--json", required=True, help="COCO instances JSON")
    stats.set_defaults(func=cmd_dataset_stats)
    sample = dataset_commands.add_parser("sample", help="write the built-in sample dataset")
    sample.add_argument("--out", required=True, help="output folder")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--num-train", type=int, default=None)
    sample.add_argument("--num-val", type=int, default=None)
    sample.add_argument(
        "--semantic-masks", action="store_true", help="also write class-id PNGs (SPLIT_masks/)"
    )
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
    convert = dataset_commands.add_parser(
        "convert", help="labelme, VIA or YOLO annotations to a COCO JSON"
    )
    convert.add_argument("src", help="labelme folder, VIA JSON file or YOLO dataset folder")
    convert.add_argument("--from", dest="format", required=True, metavar="labelme|via|yolo")
    convert.add_argument("--out", required=True, help="COCO JSON to write")
    convert.add_argument("--images", help="image root the file names are relative to")
    convert.add_argument("--classes", help="comma-separated class names: this order, only these")
    convert.add_argument("--class-attribute", help="VIA region attribute holding the class")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    convert.set_defaults(func=cmd_dataset_convert)
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
