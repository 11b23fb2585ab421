"""Weights: what MODEL.WEIGHTS values mean, fast and clear failures without a network, and
fine-tuning a checkpoint of another class count from both .pth and model-zoo .pkl files."""

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest
import torch
from conftest import DEMO_CONFIG, R50_CONFIG, REPO_ROOT

from instseg.engine import checkpoints as weights
from instseg.engine.checkpoints import (
    SCRATCH_CONFIG,
    WeightsError,
    describe_weights,
    resolve_weights,
)
from instseg.engine.trainer import Trainer, TrainRequest, build_train_cfg, setup_run

ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
ZOO_URL = (
    "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/"
    "mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl"
)
# Parameters whose shape depends on the number of classes.
CLASS_SPECIFIC = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_head.predictor.weight",
    "roi_heads.mask_head.predictor.bias",
}
# Sample classes kept for the fine-tuning set, with their new ids 1..3.
KEPT_CATEGORIES = {2: "triangle", 4: "star", 5: "cross"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def offline_env(tmp_path) -> dict[str, str]:
    """Variables that take the network away from a download, whether or not this machine has
    one: every HTTP(S) request goes through a proxy address nothing listens on (refused at
    once), and the download cache is empty, so nothing cached elsewhere hides the failure."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    variables = {"FVCORE_CACHE": str(tmp_path / "cache"), "NO_PROXY": "", "no_proxy": ""}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        variables[name] = proxy
    return variables


@pytest.fixture
def empty_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def offline(offline_env, monkeypatch, tmp_path):
    """This process without a network (see ``offline_env``); the empty cache's folder.
    urllib reads the proxy variables when it builds its shared opener, so the opener is
    dropped on the way in and out (``install_opener(None)``): no later test inherits the proxy."""
    for name, value in offline_env.items():
        monkeypatch.setenv(name, value)
    urllib.request.install_opener(None)
    yield tmp_path / "cache"
    monkeypatch.undo()
    urllib.request.install_opener(None)


# --- describe_weights / resolve_weights ---------------------------------------------------------


@pytest.mark.parametrize("name", [ZOO_CONFIG, f"zoo:{ZOO_CONFIG}"])
def test_describe_zoo_config_name(name):
    assert describe_weights(name) == ("zoo", ZOO_URL)


@pytest.mark.parametrize(
    "url",
    [
        "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
        "https://example.com/models/model_final.pth",
        "http://example.com/model.pkl",
    ],
)
def test_describe_urls_untouched(url):
    assert describe_weights(url) == ("url", url)


def test_describe_local_file_and_scratch(tmp_path):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"\0")
    assert describe_weights(str(checkpoint)) == ("file", str(checkpoint))
    assert describe_weights("") == ("scratch", "")
    # Local files and random init resolve without any download.
    assert resolve_weights(str(checkpoint)) == str(checkpoint)
    assert resolve_weights("") == ""


def test_unknown_zoo_name_and_missing_file_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="neither a local file nor a model-zoo config name"):
        describe_weights("COCO-InstanceSegmentation/no_such_model.yaml")
    with pytest.raises(WeightsError, match="file not found"):
        describe_weights(str(tmp_path / "missing.pth"))


def test_offline_zoo_weights_fail_with_instructions(offline):
    with pytest.raises(WeightsError) as excinfo:
        resolve_weights(ZOO_CONFIG)
    message = str(excinfo.value)
    assert "\n" not in message
    assert ZOO_URL in message and "download failed" in message
    assert "--weights" in message and SCRATCH_CONFIG in message
    assert not list(offline.rglob("*.pkl"))


@pytest.fixture
def silent_server():
    """http://127.0.0.1:PORT of a server that accepts connections and never answers, which is
    what a client behind a firewall that drops packets sees."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()  # resets connections a hung client may still hold


def test_download_without_answer_times_out(silent_server, empty_download_cache, monkeypatch):
    monkeypatch.setattr(weights, "DOWNLOAD_TIMEOUT_S", 1.0)
    url = f"{silent_server}/models/model_final.pkl"
    outcome = {}

    def resolve():
        try:
            resolve_weights(url)
        except Exception as e:  # recorded for the assertions below
            outcome["error"] = e

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a guard against a hang, which fails the next line
    assert not worker.is_alive(), "download hung despite the socket timeout"
    assert isinstance(outcome.get("error"), WeightsError)
    message = str(outcome["error"])
    # Given up by the socket timeout (DOWNLOAD_TIMEOUT_S), not by anything else.
    assert url in message and "--weights" in message and "timed out" in message


def test_cli_train_offline_zoo_weights_exit_2(tmp_path, dataset_opts, offline_env):
    command = [sys.executable, "-m", "instseg.cli", "train", "--config", str(R50_CONFIG)]
    command += ["--output", str(tmp_path / "run"), *dataset_opts]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **offline_env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert ZOO_URL in errors[0] and "--weights" in errors[0] and SCRATCH_CONFIG in errors[0]
    assert "Traceback" not in done.stderr
    # Failed where the weights are resolved, before any model is built.
    assert "GeneralizedRCNN" not in done.stdout + done.stderr


# --- fine-tuning from a checkpoint with another number of classes ---------------------------------


@pytest.fixture(scope="module")
def three_class_dataset(tmp_path_factory, sample_dataset):
    """The sample training images with only three of the five classes, re-numbered 1..3."""
    coco = json.loads(sample_dataset.train_json.read_text())
    new_ids = {old: new for new, old in enumerate(sorted(KEPT_CATEGORIES), start=1)}
    coco["categories"] = [
        {"id": new_ids[c["id"]], "name": c["name"], "supercategory": c["supercategory"]}
        for c in coco["categories"]
        if c["id"] in new_ids
    ]
    coco["annotations"] = [
        {**ann, "category_id": new_ids[ann["category_id"]]}
        for ann in coco["annotations"]
        if ann["category_id"] in new_ids
    ]
    assert [c["name"] for c in coco["categories"]] == list(KEPT_CATEGORIES.values())
    assert len({ann["image_id"] for ann in coco["annotations"]}) >= 8
    path = tmp_path_factory.mktemp("three_classes") / "train.json"
    path.write_text(json.dumps(coco))
    return path, sample_dataset.train_images


@pytest.fixture(scope="module")
def source_checkpoints(trained_run, tmp_path_factory):
    """The 5-class model of ``trained_run`` as a Detectron2 .pth and in the model zoo's .pkl
    layout (numpy arrays under "model", with an "__author__")."""
    pth = trained_run / "model_final.pth"
    state = torch.load(pth, map_location="cpu", weights_only=False)["model"]
    pkl = tmp_path_factory.mktemp("zoo_layout") / "model_final_5cls.pkl"
    with open(pkl, "wb") as f:
        model = {key: value.numpy() for key, value in state.items()}
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    return {"pth": pth, "pkl": pkl}, state


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_finetune_with_other_class_count(
    kind, source_checkpoints, three_class_dataset, tiny_opts, tmp_path
):
    files, source_state = source_checkpoints
    train_json, train_images = three_class_dataset
    assert source_state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 5 + 1
    opts = [
        "INSTSEG.DATASETS.TRAIN.NAME", f"three_classes_{uuid.uuid4().hex[:8]}",
        "INSTSEG.DATASETS.TRAIN.JSON", str(train_json),
        "INSTSEG.DATASETS.TRAIN.IMAGES", str(train_images),
        "INSTSEG.DATASETS.VAL.NAME", "",  # the demo config's val set has the five classes
        *tiny_opts,
        "SOLVER.MAX_ITER", "2",
        "SOLVER.BASE_LR", "0.002",
    ]  # fmt: skip
    request = TrainRequest(
        [str(DEMO_CONFIG)], opts=opts, output_dir=str(tmp_path / "run"), weights=str(files[kind])
    )
    cfg = build_train_cfg(request)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    setup_run(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)

    loaded = trainer.model.state_dict()
    assert set(loaded) >= set(source_state)
    reshaped = {key for key in source_state if loaded[key].shape != source_state[key].shape}
    assert reshaped == CLASS_SPECIFIC
    for key in source_state.keys() - CLASS_SPECIFIC:
        assert torch.equal(loaded[key], source_state[key]), key
    assert loaded["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3 + 1
    assert loaded["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 3 * 4
    assert loaded["roi_heads.mask_head.predictor.weight"].shape[0] == 3
    # The reshaped predictors keep their (finite) random init.
    assert all(torch.isfinite(loaded[key]).all() for key in CLASS_SPECIFIC)

    trainer.train()
    final = torch.load(tmp_path / "run" / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 1
    assert final["model"]["roi_heads.mask_head.predictor.weight"].shape[0] == 3

    log = (tmp_path / "run" / "log.txt").read_text()
    summary = [line for line in log.splitlines() if "Re-initialised" in line]
    assert len(summary) == 1, summary
    assert "Re-initialised 6 parameters of" in summary[0]
    for module in sorted({key.rsplit(".", 1)[0] for key in CLASS_SPECIFIC}):
        assert module in summary[0]
    assert "Skip loading parameter" not in log
    assert "not found in the checkpoint" not in log
    assert "not used by the model" not in log
    if kind == "pkl":
        assert "Reading a file from 'Detectron2 Model Zoo'" in log


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pkl_never_runs(tmp_path):
    from instseg.engine.checkpoints import FinetuneCheckpointer, check_pkl_is_data

    marker = tmp_path / "marker"
    pkl = tmp_path / "model.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"w": _RunsCode(marker)}, "__author__": "someone"}, f)
    with pytest.raises(WeightsError, match=f"^{pkl}: .*refused global (posix|os).system"):
        check_pkl_is_data(pkl)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(WeightsError, match="refused global"):
        FinetuneCheckpointer(model).load(str(pkl))
    assert not marker.exists()


def test_a_zoo_layout_pkl_is_data(source_checkpoints):
    from instseg.engine.checkpoints import check_pkl_is_data

    files, _ = source_checkpoints
    check_pkl_is_data(files["pkl"])  # numpy arrays in dicts: admitted
