"""tl_helpers.adapt.export: the atomic output folder, save/load, predict on files, ONNX export."""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tl_helpers.adapt import export
from tl_helpers.adapt.export import (
    ModelFolderError,
    OnnxExportError,
    OutputError,
    atomic_output_dir,
    check_output_dir,
    export_onnx,
    load_model,
    predict_files,
    save_model,
    write_predictions_csv,
)
from tl_helpers.models import get_preprocessing, load_backbone, replace_head

CLASSES = ["cat", "dög", "<script>x</script>"]
SIZE = 32


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(out: Path) -> list[str]:
    """Hidden temp or backup folders left beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """An earlier adapt output with some content."""
    out = tmp_path / "model"
    (out / "sub").mkdir(parents=True)
    config = {"format": 1, "backbone": "efficientnet_lite0", "classes": ["a"], "image_size": 32, "preprocessing": {}}
    (out / "config.json").write_text(json.dumps(config))
    (out / "model.safetensors").write_bytes(b"old weights")
    (out / "sub" / "note.txt").write_text("old")
    return out


# ----------------------------------------------------------------------------- atomic output folder


def test_atomic_creates_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "model"
    with atomic_output_dir(out) as folder:
        assert folder.parent == out.parent and folder.name.startswith(".model.tmp-")
        (folder / "config.json").write_text("{}")
    assert snapshot(out) == {"config.json": b"{}"}
    assert siblings(out) == []


def test_atomic_replaces_previous_output(previous: Path) -> None:
    with atomic_output_dir(previous) as folder:
        (folder / "config.json").write_text("new")
    assert snapshot(previous) == {"config.json": b"new"}
    assert siblings(previous) == []


@pytest.mark.parametrize("error", [RuntimeError("training failed"), KeyboardInterrupt()])
def test_atomic_failure_leaves_previous_untouched(previous: Path, error: BaseException) -> None:
    before = snapshot(previous)
    with pytest.raises(type(error)), atomic_output_dir(previous) as folder:
        (folder / "config.json").write_text("half-written")
        (folder / "model.safetensors").write_bytes(b"partial")
        raise error
    assert snapshot(previous) == before
    assert siblings(previous) == []


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), KeyboardInterrupt()])
def test_failed_final_rename_restores_previous(
    previous: Path, error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(previous)
    real_rename = os.rename
    calls = []

    def rename(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        calls.append((src, dst))
        if len(calls) == 2:  # old -> backup went through; temp -> out fails
            raise error
        real_rename(src, dst)

    expected = OutputError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected), atomic_output_dir(previous) as folder:
        (folder / "config.json").write_text("new")
        monkeypatch.setattr(os, "rename", rename)
    monkeypatch.undo()
    assert len(calls) == 3  # old -> backup, temp -> out (fails), backup -> old
    assert snapshot(previous) == before
    assert siblings(previous) == []


def test_atomic_failure_without_previous_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out) as folder:
        (folder / "x").write_text("x")
        raise KeyboardInterrupt
    assert not out.exists()
    assert siblings(out) == []


def test_refuses_unrelated_folder(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputError, match="no config.json") as info:
        check_output_dir(out)
    assert str(out) in str(info.value)
    with pytest.raises(OutputError), atomic_output_dir(out):
        pytest.fail("must not get here")  # pragma: no cover
    assert snapshot(out) == {"holiday.jpg": b"precious"}
    assert siblings(out) == []


def test_refuses_a_folder_with_an_unrelated_config(tmp_path: Path) -> None:
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"name": "my web app"}')
    with pytest.raises(OutputError, match="refusing to replace it"):
        check_output_dir(out)


def test_accepts_empty_folder_and_refuses_a_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output_dir(empty)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(a_file)


def _read_only_parent(tmp_path: Path) -> Path:
    """A folder this process cannot write to: chmod 555, or (as root, where chmod does not stop writes) /sys."""
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    if export._probe_writable(parent) is not None:
        return parent
    parent.chmod(0o755)
    sysfs = Path("/sys")
    if sysfs.is_dir() and export._probe_writable(sysfs) is not None:
        return sysfs
    pytest.skip("no read-only folder available (running as root, and /sys is writable)")


def test_read_only_parent_fails_up_front(tmp_path: Path) -> None:
    parent = _read_only_parent(tmp_path)
    try:
        with pytest.raises(OutputError, match="choose another --out or make it writable") as info:
            check_output_dir(parent / "model")
        assert str(parent) in str(info.value)
    finally:
        if parent != Path("/sys"):
            parent.chmod(0o755)


def test_unwritable_parent_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "_probe_writable", lambda folder: PermissionError(13, "Permission denied"))
    with pytest.raises(OutputError, match=r"not writable \(Permission denied\).*choose another --out"):
        check_output_dir(tmp_path / "model")


# ----------------------------------------------------------------------------- save / load


def tiny_model(num_classes: int = len(CLASSES)) -> torch.nn.Module:
    """EfficientNet-Lite0 without pretrained weights, with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", pretrained=False)
    replace_head(model, num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_config(model: torch.nn.Module) -> dict:
    pre = get_preprocessing(model)
    return {
        "backbone": "efficientnet_lite0",
        "classes": CLASSES,
        "image_size": SIZE,
        "preprocessing": {"mean": list(pre.mean), "std": list(pre.std), "resize": "shorter side to 32, bicubic"},
        "recipe": {"strategy": "probe", "C": 1.0},
        "seed": 0,
        "versions": {"torch": torch.__version__},
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("saved") / "model"
    model = tiny_model()
    with atomic_output_dir(folder) as tmp:
        save_model(tmp, model, tiny_config(model))
    return folder, model


def test_save_load_round_trip(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, model = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    text = (folder / "config.json").read_text(encoding="utf-8")
    config = json.loads(text)
    assert config["format"] == 1 and config["classes"] == CLASSES
    assert list(config) == sorted(config) and "dög" in text  # sorted keys, readable unicode
    loaded, loaded_config = load_model(folder)
    assert loaded_config == config and not loaded.training
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_model_checks_config(tmp_path: Path) -> None:
    model = tiny_model(2)
    with pytest.raises(ValueError, match="image_size"):
        save_model(tmp_path, model, {"backbone": "efficientnet_lite0", "classes": ["a", "b"], "preprocessing": {}})
    with pytest.raises(ValueError, match="2 outputs"):
        save_model(tmp_path, model, tiny_config(model))


def test_load_model_errors_name_the_file(tmp_path: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    with pytest.raises(ModelFolderError, match="does not exist.*tl_helpers adapt"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ModelFolderError, match="config.json is missing"):
        load_model(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((saved[0] / "config.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="model.safetensors is missing"):
        load_model(broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFolderError, match=r"model\.safetensors is corrupt"):
        load_model(broken)
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFolderError, match=r"config\.json cannot be read"):
        load_model(broken)


def test_load_model_rejects_mismatched_weights(tmp_path: Path) -> None:
    model = tiny_model(2)
    config = {**tiny_config(model), "classes": ["a", "b"]}
    save_model(tmp_path, model, config)
    config["classes"] = ["a", "b", "c"]
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelFolderError, match="does not fit"):
        load_model(tmp_path)


# ----------------------------------------------------------------------------- predict


def write_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_image(root / "a.png", 1)
    write_image(root / "b.jpg", 2)
    write_image(root / "nested" / "c.png", 3)
    write_image(root / ".hidden" / "d.png", 4)
    write_image(root / "__MACOSX" / "e.png", 5)
    (root / "bad.jpg").write_bytes(b"not really a jpeg")
    (root / "notes.txt").write_text("ignore me")
    (root / ".DS_Store").write_bytes(b"\x00")
    return root


def test_predict_files_records_errors_and_goes_on(saved: tuple[Path, torch.nn.Module], image_dir: Path) -> None:
    folder, _ = saved
    preds = predict_files(folder, [image_dir, image_dir / "missing.png"], batch_size=2)
    names = [Path(p.path).relative_to(image_dir).as_posix() for p in preds]
    assert names == ["a.png", "b.jpg", "bad.jpg", "nested/c.png", "missing.png"]
    by_name = dict(zip(names, preds))
    assert "bad.jpg" in by_name["bad.jpg"].error and by_name["bad.jpg"].label is None
    assert by_name["missing.png"].error == "no such file or folder"
    for name in ("a.png", "b.jpg", "nested/c.png"):
        p = by_name[name]
        assert p.error is None and p.label in CLASSES
        assert len(p.top) == 3 and p.top[0] == (p.label, p.probability)
        assert sum(prob for _, prob in p.top) == pytest.approx(1.0, abs=1e-5)
        assert [prob for _, prob in p.top] == sorted((prob for _, prob in p.top), reverse=True)
    # batching does not change the answers
    again = predict_files(load_model(folder), [image_dir], batch_size=64, top_k=1)
    for p, q in zip((p for p in preds if p.error is None), (q for q in again if q.error is None)):
        assert p.label == q.label and p.probability == pytest.approx(q.probability, abs=1e-5)
        assert len(q.top) == 1


def test_predict_files_matches_the_model(saved: tuple[Path, torch.nn.Module], image_dir: Path) -> None:
    from tl_helpers.adapt.inspection import load_image

    folder, model = saved
    (pred,) = predict_files(folder, [image_dir / "a.png"])
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    mean = torch.tensor(config["preprocessing"]["mean"]).view(3, 1, 1)
    std = torch.tensor(config["preprocessing"]["std"]).view(3, 1, 1)
    x = (load_image(image_dir / "a.png", SIZE).float() / 255 - mean) / std
    with torch.no_grad():
        probs = torch.softmax(model(x[None]), 1)[0]
    assert pred.label == CLASSES[int(probs.argmax())]
    assert pred.probability == pytest.approx(float(probs.max()), abs=1e-5)


def test_empty_folder_is_reported(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (pred,) = predict_files(saved[0], [tmp_path / "empty"])
    assert pred.label is None and "no image files" in pred.error


def test_write_predictions_csv(tmp_path: Path) -> None:
    preds = [
        export.Prediction("x/a.png", "dög", 0.75, None, [("dög", 0.75), ("cat", 0.25)]),
        export.Prediction("x/bad.jpg", None, None, "x/bad.jpg: cannot decode", []),
    ]
    path = write_predictions_csv(preds, tmp_path / "out" / "preds.csv")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0] == {
        "path": "x/a.png",
        "label": "dög",
        "probability": "0.750000",
        "top": "dög:0.750000;cat:0.250000",
        "error": "",
    }
    assert rows[1]["label"] == "" and rows[1]["error"] == "x/bad.jpg: cannot decode"


# ----------------------------------------------------------------------------- ONNX


def test_export_onnx_verified(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model.onnx"
    error = export_onnx(model, path, SIZE, exporter="legacy", metadata={"classes": CLASSES})
    assert 0 <= error <= 1e-3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    proto = onnx.load(str(path))
    assert json.loads({p.key: p.value for p in proto.metadata_props}["classes"]) == CLASSES
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_export_onnx_without_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(OnnxExportError, match=r"tl-helpers\[onnx\]"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx", SIZE)
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_export_onnx_dynamo(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")  # the torch.export-based exporter needs it (about 20 s on 2 cores)
    error = export_onnx(tiny_model(), tmp_path / "model.onnx", SIZE, exporter="dynamo", metadata={"classes": CLASSES})
    assert 0 <= error <= 1e-3
