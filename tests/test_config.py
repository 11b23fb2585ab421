"""Config merging: order of sources, errors that name their source, frozen results, round trips."""

import re
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import R50_CONFIG
from detectron2 import model_zoo
from detectron2.config import get_cfg

from instseg.config import ConfigError, build_cfg, save_cfg
from instseg.data.sample_shapes import CLASS_NAMES

ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


def _write_yaml(path, text):
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _zoo_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    return cfg


def _plain(value):
    """Config values as YAML stores them: nested tuples and lists compare alike."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@pytest.fixture
def project_yamls(tmp_path):
    """A project YAML naming the zoo base, and a second one overriding some of its keys."""
    first = _write_yaml(
        tmp_path / "first.yaml",
        f"""
        VERSION: 2
        INSTSEG:
          MODEL_ZOO_CONFIG: {ZOO_CONFIG}
        SOLVER:
          BASE_LR: 0.01
          GAMMA: 0.2
          MOMENTUM: 0.5
        """,
    )
    second = _write_yaml(
        tmp_path / "second.yaml",
        """
        VERSION: 2
        SOLVER:
          GAMMA: 0.3
          MOMENTUM: 0.6
        """,
    )
    return first, second


def test_merge_order_defaults_zoo_yamls_then_overrides(project_yamls):
    defaults, zoo = get_cfg(), _zoo_cfg()
    # The keys below only tell the sources apart if the zoo base changes Detectron2's defaults.
    assert zoo.SOLVER.MAX_ITER != defaults.SOLVER.MAX_ITER
    assert zoo.SOLVER.BASE_LR not in (defaults.SOLVER.BASE_LR, 0.01)

    cfg = build_cfg(project_yamls, ["SOLVER.MOMENTUM", "0.7"])

    assert cfg.SOLVER.NESTEROV == defaults.SOLVER.NESTEROV  # Detectron2 default only
    assert cfg.SOLVER.MAX_ITER == zoo.SOLVER.MAX_ITER  # zoo base beats the defaults
    assert cfg.MODEL.MASK_ON is True and defaults.MODEL.MASK_ON is False
    assert cfg.SOLVER.BASE_LR == 0.01  # project YAML beats the zoo base
    assert cfg.SOLVER.GAMMA == 0.3  # second project YAML beats the first
    assert cfg.SOLVER.MOMENTUM == 0.7  # KEY VALUE beats every file
    assert cfg.INSTSEG.MODEL_ZOO_CONFIG == ZOO_CONFIG


def test_project_yaml_order_decides(project_yamls):
    first, second = project_yamls
    assert build_cfg([second, first]).SOLVER.GAMMA == 0.2


def test_base_inheritance_between_project_yamls(project_yamls, tmp_path):
    first, _ = project_yamls
    child = _write_yaml(
        tmp_path / "child.yaml",
        f"""
        _BASE_: {first.name}
        SOLVER:
          GAMMA: 0.4
        """,
    )
    cfg = build_cfg([child])
    # The zoo base named only in the parent file is still merged first.
    assert cfg.INSTSEG.MODEL_ZOO_CONFIG == ZOO_CONFIG
    assert cfg.SOLVER.MAX_ITER == _zoo_cfg().SOLVER.MAX_ITER
    assert cfg.SOLVER.BASE_LR == 0.01  # from the parent
    assert cfg.SOLVER.MOMENTUM == 0.5  # from the parent
    assert cfg.SOLVER.GAMMA == 0.4  # the child wins


def test_zoo_base_from_command_line_stays_below_project_yaml(tmp_path):
    project = _write_yaml(tmp_path / "p.yaml", "SOLVER:\n  BASE_LR: 0.005\n")
    cfg = build_cfg([project], ["INSTSEG.MODEL_ZOO_CONFIG", ZOO_CONFIG])
    assert cfg.SOLVER.MAX_ITER == _zoo_cfg().SOLVER.MAX_ITER
    assert cfg.SOLVER.BASE_LR == 0.005


def test_unknown_zoo_config_is_a_config_error():
    with pytest.raises(ConfigError, match="INSTSEG.MODEL_ZOO_CONFIG"):
        build_cfg([], ["INSTSEG.MODEL_ZOO_CONFIG", "COCO-InstanceSegmentation/no_such.yaml"])


def test_shipped_r50_config_is_mask_rcnn_r50_fpn():
    cfg = build_cfg([R50_CONFIG])
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.MODEL.MASK_ON is True
    assert cfg.MODEL.RESNETS.DEPTH == 50
    assert "fpn" in cfg.MODEL.BACKBONE.NAME
    assert cfg.MODEL.FPN.IN_FEATURES


def test_config_name_without_folder_finds_shipped_yaml():
    assert build_cfg(["mask_rcnn_R50_FPN"]) == build_cfg([R50_CONFIG])


def test_result_is_frozen_unless_asked():
    cfg = build_cfg([R50_CONFIG])
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 1.0
    mutable = build_cfg([R50_CONFIG], freeze=False)
    mutable.SOLVER.BASE_LR = 1.0
    assert mutable.SOLVER.BASE_LR == 1.0


def test_unknown_key_in_yaml_names_key_file_and_closest_key(tmp_path):
    bad = _write_yaml(tmp_path / "bad.yaml", "VERSION: 2\nSOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError) as info:
        build_cfg([R50_CONFIG, bad])
    message = str(info.value)
    assert str(bad) in message
    assert "SOLVER.BASE_LRR" in message
    assert "did you mean SOLVER.BASE_LR?" in message
    assert "\n" not in message


def test_unknown_instseg_key_in_yaml_suggests_instseg_key(tmp_path):
    bad = _write_yaml(tmp_path / "bad.yaml", "INSTSEG:\n  PREDICT:\n    BATCH_SIZ: 2\n")
    with pytest.raises(
        ConfigError, match=r"INSTSEG\.PREDICT\.BATCH_SIZ\b.*INSTSEG\.PREDICT\.BATCH_SIZE"
    ):
        build_cfg([bad])


def test_unknown_key_on_command_line_names_closest_key():
    with pytest.raises(ConfigError) as info:
        build_cfg([R50_CONFIG], ["SOLVER.BASE_LRR", "0.1"])
    message = str(info.value)
    assert message.startswith("command line:")
    assert "SOLVER.BASE_LRR" in message and "did you mean SOLVER.BASE_LR?" in message


def test_odd_number_of_overrides():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        build_cfg([R50_CONFIG], ["SOLVER.BASE_LR", "0.1", "SOLVER.MAX_ITER"])


@pytest.mark.parametrize(
    ("key", "value"),
    [("SOLVER.MAX_ITER", "many"), ("SOLVER.MAX_ITER", "1.5"), ("MODEL.MASK_ON", "[1]")],
)
def test_value_of_wrong_type_names_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        build_cfg([R50_CONFIG], [key, value])
    assert key in str(info.value)
    assert str(info.value).startswith("command line:")


def test_wrong_type_in_yaml_names_the_file(tmp_path):
    bad = _write_yaml(tmp_path / "bad.yaml", "SOLVER:\n  MAX_ITER: lots\n")
    with pytest.raises(ConfigError, match=rf"{bad}.*SOLVER\.MAX_ITER"):
        build_cfg([bad])


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=rf"{missing}: config file not found"):
        build_cfg([missing])


def test_device_defaults_to_what_is_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert expected == build_cfg([R50_CONFIG]).MODEL.DEVICE
    assert build_cfg([R50_CONFIG], ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"


def test_declared_dataset_names_become_detectron2_datasets():
    cfg = build_cfg(
        [R50_CONFIG],
        ["INSTSEG.DATASETS.TRAIN.NAME", "mine_train", "INSTSEG.DATASETS.VAL.NAME", "mine_val"],
    )
    assert cfg.DATASETS.TRAIN == ("mine_train",)
    assert cfg.DATASETS.TEST == ("mine_val",)


def test_undeclared_datasets_leave_detectron2_datasets_alone():
    cfg = build_cfg([])
    assert cfg.DATASETS.TRAIN == get_cfg().DATASETS.TRAIN
    assert cfg.DATASETS.TEST == get_cfg().DATASETS.TEST


def test_save_cfg_round_trip(tmp_path, project_yamls):
    cfg = build_cfg(
        [R50_CONFIG, *project_yamls],
        ["SOLVER.STEPS", "(10, 20)", "INSTSEG.PREDICT.CLASSES", "['a', 'b']"],
    )
    saved = save_cfg(cfg, tmp_path / "run" / "config.yaml")
    assert saved.is_file()
    assert not [p for p in saved.parent.iterdir() if p != saved]  # no temporary file left
    rebuilt = build_cfg([saved])
    assert _plain(rebuilt) == _plain(cfg)
    assert rebuilt.SOLVER.STEPS == (10, 20)
    assert rebuilt.INSTSEG.MODEL_ZOO_CONFIG == ZOO_CONFIG


def test_trained_run_config_rebuilds_with_dataset_classes(trained_run):
    saved = trained_run / "config.yaml"
    rebuilt = build_cfg([saved])
    # The run folder alone describes the model: its classes come from the training JSON.
    assert len(CLASS_NAMES) == rebuilt.MODEL.ROI_HEADS.NUM_CLASSES
    assert list(rebuilt.INSTSEG.THING_CLASSES) == list(CLASS_NAMES)
    assert rebuilt.MODEL.RESNETS.DEPTH == 18
    assert str(trained_run) == rebuilt.OUTPUT_DIR
    assert _plain(rebuilt) == yaml.safe_load(saved.read_text())


def _python_tag_yaml(path: Path, marker: Path) -> Path:
    path.write_text(f"SOLVER: !!python/object/apply:os.system ['touch {marker}']\n")
    return path


def test_a_python_tag_in_a_project_config_never_runs(tmp_path):
    marker = tmp_path / "marker"
    config = _python_tag_yaml(tmp_path / "x.yaml", marker)
    with pytest.raises(ConfigError) as info:
        build_cfg([str(config)])
    assert str(info.value).startswith(f"{config}:1:")
    assert "Python tags are not allowed" in str(info.value)
    assert not marker.exists()


def test_a_python_tag_in_a_base_config_never_runs(tmp_path):
    marker = tmp_path / "marker"
    base = _python_tag_yaml(tmp_path / "base.yaml", marker)
    config = tmp_path / "x.yaml"
    config.write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.01\n")
    with pytest.raises(ConfigError, match=f"^{base}:1:.*Python tags"):
        build_cfg([str(config)])
    assert not marker.exists()


def test_a_python_tag_in_the_run_config_beside_the_weights_never_runs(tmp_path):
    from instseg.inference.settings import load_model_config

    marker = tmp_path / "marker"
    run_config = tmp_path / "config.yaml"
    run_config.write_text(
        f"INSTSEG:\n  THING_CLASSES: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"^{run_config}:2:.*Python tags"):
        load_model_config([], str(weights), ["MODEL.DEVICE", "cpu"])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "config file is empty"),
        ("# nothing but a comment\n", "config file is empty"),
        ("- SOLVER\n- MODEL\n", "a config is a mapping of KEY: value, not a list"),
        ("SOLVER:\n  BASE_LR: [0.1\n", r":3:1: expected ',' or ']', but got '<stream end>'"),
        ("SOLVER: {BASE_LR: 0.1\n", ":2:1: expected ',' or '}', but got '<stream end>'"),
        ("_BASE_: missing.yaml\n", "_BASE_ missing.yaml: not found"),
        ("_BASE_: [a.yaml, b.yaml]\n", "_BASE_ must be one file name"),
        ('DATASETS:\n  TRAIN: "mine"\n', 'DATASETS.TRAIN is a tuple of names: write \\("mine",\\)'),
    ],
    ids=["empty", "comment-only", "list", "syntax", "flow", "no-base", "two-bases", "train-str"],
)
def test_bad_config_files_are_one_line_naming_the_file(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        build_cfg([str(config)])
    line = str(info.value)
    assert "\n" not in line and line.startswith(str(config))
    assert re.search(message, line), line


def test_a_python_config_is_refused(tmp_path):
    config = tmp_path / "lazy.py"
    config.write_text("import os\nos.system('touch marker')\n")
    with pytest.raises(
        ConfigError, match=r"lazy.py: Python \(LazyConfig\) files are not supported"
    ):
        build_cfg([str(config)])


def test_base_accepts_a_shipped_config_name(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("_BASE_: demo_R18_FPN_cpu.yaml\nSOLVER:\n  BASE_LR: 0.0123\n")
    cfg = build_cfg([str(config)])
    shipped = build_cfg(["demo_R18_FPN_cpu"])
    assert cfg.SOLVER.BASE_LR == 0.0123
    assert cfg.MODEL.RESNETS.DEPTH == shipped.MODEL.RESNETS.DEPTH
    assert cfg.SOLVER.MAX_ITER == shipped.SOLVER.MAX_ITER


def test_a_base_chain_that_includes_itself(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_ chain includes this file again"):
        build_cfg([str(tmp_path / "a.yaml")])


def test_the_cli_prints_one_line_and_exits_2_for_a_bad_config(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text("- not a mapping\n")
    done = subprocess.run(
        [sys.executable, "-m", "instseg.cli", "config", "show", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {config}: a config is a mapping of KEY: value, not a list"
    ]
