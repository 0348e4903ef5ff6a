"""Write the kept model atomically, load it back, apply it to image files, export it to ONNX.

An ``adapt`` output folder holds:

- ``model.safetensors``: the weights (:func:`save_model`);
- ``config.json``: what :func:`load_model` and :func:`predict_files` need to rebuild and apply
  the model exactly as it was trained (keys: see :func:`save_model`);
- optionally ``model.onnx`` (:func:`export_onnx`) and the report (:mod:`tl_helpers.adapt.report`).

The folder is written through :func:`atomic_output_dir`: everything goes into a hidden temp
folder beside it, which replaces the old folder only once all of it is written, so an
interrupted or failed run leaves the previous output exactly as it was.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "ModelFolderError",
    "OnnxExportError",
    "OutputError",
    "Prediction",
    "WEIGHTS_NAME",
    "atomic_output_dir",
    "check_output_dir",
    "expand_image_paths",
    "export_onnx",
    "load_model",
    "predict_files",
    "read_config",
    "save_model",
    "write_predictions_csv",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("backbone", "classes", "image_size", "preprocessing")
_RUN_ADAPT = "run `python -m tl_helpers adapt DIR --out OUT` first and pass that OUT"


class OutputError(RuntimeError):
    """The output folder cannot be written or must not be replaced; the message names it and the fix."""


class ModelFolderError(RuntimeError):
    """A model folder is missing, incomplete or corrupt; the message names the file and the fix."""


class OnnxExportError(RuntimeError):
    """ONNX export is unavailable (packages missing) or its output differs from PyTorch's."""


# ----------------------------------------------------------------------------- the output folder


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _probe_writable(folder: Path) -> OSError | None:
    """Try to create and delete a file in ``folder``: the only test that also holds for root and read-only mounts."""
    probe = folder / f".tl-write-test-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        return exc
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _not_writable(path: Path, exc: OSError, target: Path | None = None) -> OutputError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        fix = "free some disk space or choose another --out"
    else:
        fix = "choose another --out or make it writable"
    where = f"{path}" if target is None or target == path else f"{target}: {path}"
    return OutputError(f"Cannot write the output folder {where} is not writable ({reason}). Fix: {fix}.")


def check_output_dir(out: str | os.PathLike) -> None:
    """Fail fast, before any training, when ``out`` cannot be (re)written.

    Checks that the nearest existing folder at or above ``out``'s parent is writable (by
    creating a file there, which also works for root and read-only mounts), and that
    ``out``, if it exists, is a folder this command may replace: empty, or holding a
    ``config.json`` from an earlier ``adapt`` run (a JSON object with the keys
    :func:`save_model` requires; any other ``config.json`` does not count). A folder with
    anything else in it is never replaced, so pointing ``--out`` at an unrelated folder
    cannot delete it.

    Args:
        out: The output folder.

    Raises:
        OutputError: with the path and the fix.
    """
    target = _absolute(out)
    if target.parent == target:
        raise OutputError(f"--out {out} is a filesystem root; choose a folder such as ./my-model.")
    if target.is_symlink():
        raise OutputError(
            f"--out {target} is a symbolic link; give the real folder ({os.path.realpath(target)}) "
            f"or choose another --out."
        )
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"--out {target} exists and is a file, not a folder. Fix: choose another --out.")
        entries = list(target.iterdir())
        if entries and not _is_adapt_output(target):
            raise OutputError(
                f"--out {target} is a folder with {len(entries)} entries and no {CONFIG_NAME} from an earlier "
                f"`adapt` run; refusing to replace it. Fix: choose another (new or empty) --out, or remove "
                f"that folder yourself."
            )
        if entries:  # replacing it deletes its content: that must be possible too
            problem = _probe_writable(target)
            if problem is not None:
                raise _not_writable(target, problem)
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"Cannot create {target}: {existing} is a file, not a folder. Fix: choose another --out.")
    problem = _probe_writable(existing)
    if problem is not None:
        raise _not_writable(existing, problem, target)


def _is_adapt_output(folder: Path) -> bool:
    """Whether ``folder`` holds a ``config.json`` written by :func:`save_model` (not just any config.json)."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and all(key in config for key in REQUIRED_KEYS)


def _fresh_sibling(target: Path, kind: str) -> Path:
    """A name beside ``target`` that does not exist yet: ``.NAME.<kind>-XXXXXXXX``."""
    while True:
        candidate = target.with_name(f".{target.name}.{kind}-{secrets.token_hex(4)}")
        if not os.path.lexists(candidate):
            return candidate


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh hidden folder beside ``out``; it becomes ``out`` only if the block succeeds.

    ``with atomic_output_dir(out) as folder:`` write everything into ``folder``. On success
    the old ``out`` (if any) is renamed to a hidden backup, ``folder`` is renamed to ``out``
    and the backup is deleted, so at every moment the old or the new content is complete on
    disk. On any exception, ``KeyboardInterrupt`` included, ``folder`` is deleted and ``out``
    is left exactly as it was.

    Args:
        out: The output folder (its parents are created when missing).

    Yields:
        The temp folder (``.OUT.tmp-XXXXXXXX`` in ``out``'s parent).

    Raises:
        OutputError: ``out`` fails :func:`check_output_dir`, or the final rename fails.
    """
    target = _absolute(out)
    check_output_dir(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = _fresh_sibling(target, "tmp")
            try:
                tmp.mkdir()  # plain mkdir: the usual permissions (umask), unlike mkdtemp's 0700
                break
            except FileExistsError:  # pragma: no cover - a name collision between the check and mkdir
                continue
    except OSError as exc:
        raise _not_writable(target.parent, exc) from exc
    try:
        yield tmp
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``; the old ``target`` is restored if that fails, deleted if it succeeds."""
    check_output_dir(target)  # the block may have run for minutes: re-check before touching the old folder
    backup = _fresh_sibling(target, "old") if os.path.lexists(target) else None
    try:
        if backup is not None:
            os.rename(target, backup)
        os.rename(tmp, target)
    except BaseException as exc:  # OSError, or Ctrl-C between the two renames: put the old folder back
        if backup is not None and os.path.lexists(backup) and not os.path.lexists(target):
            os.rename(backup, target)
        if isinstance(exc, OSError):
            raise OutputError(
                f"Could not move the new output into {target}: {exc.strerror or exc}. "
                f"Fix: choose another --out or make {target.parent} writable."
            ) from exc
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
        if os.path.lexists(backup):
            warnings.warn(f"The previous output was kept at {backup}; delete it yourself.", stacklevel=3)


# ----------------------------------------------------------------------------- save and load


def save_model(folder: str | os.PathLike, model: nn.Module, config: Mapping[str, Any]) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if missing).

    Config keys (written with ``indent=2`` and sorted keys; ``format`` defaults to
    :data:`FORMAT_VERSION`):

    - ``backbone``: the name :func:`tl_helpers.models.load_backbone` builds the network from
      (``"efficientnet_lite0"`` for timm's ``tf_efficientnet_lite0``, or any timm /
      ``torchvision/`` name it takes);
    - ``classes``: class names in label order (output ``i`` is ``classes[i]``);
    - ``image_size``: side length the images are decoded to;
    - ``preprocessing``: ``{"mean": [3 floats], "std": [3 floats], "resize": "shorter side to
      <image_size>, bicubic, centre crop"}``; pixels are scaled to 0..1, then normalised;
    - ``recipe``: how the kept strategy was trained (free-form dict);
    - ``seed``: the seed of the run;
    - ``versions``: package versions (free-form dict);
    - ``format``: the folder layout version (1).

    Args:
        folder: Where to write (usually the folder from :func:`atomic_output_dir`).
        model: The trained model (any device; saved as contiguous CPU tensors).
        config: As above; ``backbone``, ``classes``, ``image_size`` and ``preprocessing`` are required.

    Raises:
        ValueError: a required key is missing, or ``classes`` does not match the model's outputs.
    """
    from safetensors.torch import save_file

    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"save_model: config lacks {missing} (needs {list(REQUIRED_KEYS)})")
    pre = config["preprocessing"]
    if not isinstance(pre, Mapping) or "mean" not in pre or "std" not in pre:
        raise ValueError("save_model: config['preprocessing'] needs 'mean' and 'std'")
    state = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    n_out = _output_count(model)
    if n_out is not None and n_out != len(config["classes"]):
        raise ValueError(f"save_model: the model has {n_out} outputs but config lists {len(config['classes'])} classes")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    full = {"format": FORMAT_VERSION, **dict(config)}
    text = json.dumps(full, indent=2, sort_keys=True, ensure_ascii=False)
    (folder / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")


def _output_count(model: nn.Module) -> int | None:
    from tl_helpers.models import get_head

    try:
        return int(get_head(model).out_features)
    except ValueError:
        return None


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a model folder, checked for the keys :func:`load_model` needs."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise ModelFolderError(f"Model folder {folder} does not exist. Fix: {_RUN_ADAPT}.")
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing, so {folder} is not an `adapt` output. Fix: {_RUN_ADAPT}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path} cannot be read ({exc}). Fix: {_RUN_ADAPT} again.") from exc
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path} does not hold a JSON object. Fix: {_RUN_ADAPT} again.")
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ModelFolderError(f"{path} lacks {missing}. Fix: {_RUN_ADAPT} again.")
    if int(config.get("format", FORMAT_VERSION)) > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path} has format {config['format']}, newer than this tl_helpers reads ({FORMAT_VERSION}). "
            f"Fix: update tl_helpers."
        )
    classes = config["classes"]
    if not isinstance(classes, list) or not classes:
        raise ModelFolderError(f"{path}: 'classes' must be a non-empty list. Fix: {_RUN_ADAPT} again.")
    return config


def load_model(folder: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`, on the CPU, in eval mode.

    The backbone is built without pretrained weights (``load_backbone(name,
    pretrained=False)``), given a head with one output per class, and the saved weights are
    loaded with ``strict=True``.

    Args:
        folder: An ``adapt`` output folder.

    Returns:
        ``(model, config)``.

    Raises:
        ModelFolderError: the folder, ``config.json`` or ``model.safetensors`` is missing or
            corrupt, or the weights do not fit the architecture; the message names the file.
    """
    from safetensors.torch import load_file

    from tl_helpers.models import load_backbone, replace_head

    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelFolderError(f"{weights} is missing. Fix: {_RUN_ADAPT} again.")
    try:
        model = load_backbone(config["backbone"], pretrained=False)
    except (ValueError, RuntimeError) as exc:
        raise ModelFolderError(
            f"{folder / CONFIG_NAME}: cannot build backbone {config['backbone']!r} ({exc}). Fix: {_RUN_ADAPT} again."
        ) from exc
    replace_head(model, len(config["classes"]))
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError
        raise ModelFolderError(f"{weights} is corrupt ({exc}). Fix: {_RUN_ADAPT} again.") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ModelFolderError(
            f"{weights} does not fit backbone {config['backbone']!r} with {len(config['classes'])} classes "
            f"({' '.join(first)}). Fix: {_RUN_ADAPT} again."
        ) from exc
    return model.eval(), config


# ----------------------------------------------------------------------------- predict


@dataclass
class Prediction:
    """What the model says about one file.

    Attributes:
        path: The file, as given or as found under a given folder.
        label: The most probable class (``None`` when the file could not be read).
        probability: Its probability (0..1; ``None`` on error).
        error: Why there is no prediction (unreadable file, missing path, empty folder), else ``None``.
        top: The ``top_k`` most probable ``(class, probability)`` pairs, most probable first.
    """

    path: str
    label: str | None
    probability: float | None
    error: str | None = None
    top: list[tuple[str, float]] = field(default_factory=list)


def expand_image_paths(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files to predict: given files as they are, folders expanded to their image files.

    A folder is walked recursively, as :func:`~tl_helpers.adapt.inspection.inspect_folder`
    reads one: only files with an extension in
    :data:`~tl_helpers.adapt.inspection.IMAGE_EXTENSIONS` (any case) are kept, in sorted
    order, skipping every name that starts with a dot and the tool entries of
    :data:`~tl_helpers.adapt.inspection.IGNORED_NAMES` (``__MACOSX``, ``Thumbs.db``...).
    A file named explicitly is kept whatever its extension (decoding tells).

    Returns:
        ``(path, error)`` pairs in order: ``error`` is ``None``, or says why there is
        nothing to read (the path does not exist, a folder holds no images).
    """
    from tl_helpers.adapt.inspection import IGNORED_NAMES, IMAGE_EXTENSIONS

    def skipped(name: str) -> bool:
        return name.startswith(".") or name in IGNORED_NAMES

    out: list[tuple[str, str | None]] = []
    for given in paths:
        path = os.fspath(given)
        if os.path.isdir(path):
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not skipped(d))
                for name in sorted(filenames):
                    if not skipped(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        found.append(os.path.join(dirpath, name))
            if found:
                out.extend((f, None) for f in found)
            else:
                exts = " ".join(sorted(IMAGE_EXTENSIONS))
                out.append((path, f"no image files ({exts}) in this folder"))
        elif os.path.exists(path):
            out.append((path, None))
        else:
            out.append((path, "no such file or folder"))
    return out


def predict_files(
    folder_or_model: str | os.PathLike | tuple[nn.Module, Mapping[str, Any]],
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    top_k: int = 3,
) -> list[Prediction]:
    """Classify image files (and the images under folders) with a saved model.

    Each file is decoded the way ``adapt`` decoded its training images
    (:func:`tl_helpers.adapt.inspection.load_image` at ``config["image_size"]``), scaled to
    0..1, normalised with the config's mean and std, and classified in batches. A file
    that cannot be decoded gets a :class:`Prediction` with ``error`` set; the others go on.

    Args:
        folder_or_model: An ``adapt`` output folder, or ``(model, config)`` as
            :func:`load_model` returns (the model is moved to ``device`` and set to eval).
        paths: Image files and folders (see :func:`expand_image_paths`).
        batch_size: Images per forward pass (bounds the memory used).
        device: Where to run the model.
        top_k: How many classes to list in :attr:`Prediction.top` (at most the number of classes).

    Returns:
        One :class:`Prediction` per file found (or per path that gave nothing to read), in order.
    """
    from tl_helpers.adapt.inspection import ImageDecodeError, load_image

    if batch_size < 1 or top_k < 1:
        raise ValueError(f"batch_size and top_k must be >= 1, got {batch_size} and {top_k}")
    if isinstance(folder_or_model, tuple):
        model, config = folder_or_model
    else:
        model, config = load_model(folder_or_model)
    classes = [str(c) for c in config["classes"]]
    size = int(config["image_size"])
    mean = torch.tensor(config["preprocessing"]["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(config["preprocessing"]["std"], dtype=torch.float32).view(1, 3, 1, 1)
    k = min(top_k, len(classes))
    device = torch.device(device)
    model = model.to(device).eval()

    results: list[Prediction | None] = []
    results_paths: list[str] = []
    pending: list[tuple[int, torch.Tensor]] = []  # (slot in results, decoded image)

    def flush() -> None:
        if not pending:
            return
        batch = torch.stack([image for _, image in pending]).float().div_(255)
        batch = ((batch - mean) / std).to(device)
        with torch.inference_mode():
            probs = torch.softmax(model(batch).float(), dim=1).cpu()
        values, indices = probs.topk(k, dim=1)
        for (slot, _), vals, idxs in zip(pending, values.tolist(), indices.tolist()):
            top = [(classes[i], float(v)) for v, i in zip(vals, idxs)]
            results[slot] = Prediction(results_paths[slot], top[0][0], top[0][1], None, top)
        pending.clear()

    for path, problem in expand_image_paths(paths):
        results_paths.append(path)
        results.append(None)
        slot = len(results) - 1
        if problem is not None:
            results[slot] = Prediction(path, None, None, problem, [])
            continue
        try:
            image = load_image(path, size)
        except (ImageDecodeError, OSError) as exc:
            results[slot] = Prediction(path, None, None, str(exc) or type(exc).__name__, [])
            continue
        pending.append((slot, image))
        if len(pending) >= batch_size:
            flush()
    flush()
    return [r for r in results if r is not None]


def write_predictions_csv(predictions: Sequence[Prediction], path: str | os.PathLike) -> Path:
    """Write predictions as CSV (UTF-8): ``path,label,probability,top,error``.

    ``probability`` has 6 decimals; ``top`` reads ``class:0.912345;other:0.051234``; the
    label and probability of a failed file are empty and ``error`` says why. Written
    atomically (temp file, then rename).

    Returns:
        The path written.
    """
    from tl_helpers.files import atomic_path

    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "probability", "top", "error"])
        for p in predictions:
            writer.writerow(
                [
                    p.path,
                    p.label or "",
                    "" if p.probability is None else f"{p.probability:.6f}",
                    ";".join(f"{name}:{prob:.6f}" for name, prob in p.top),
                    p.error or "",
                ]
            )
    return target


# ----------------------------------------------------------------------------- ONNX


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise OnnxExportError(
            f"ONNX export needs the packages onnx and onnxruntime ({exc.name} is not installed). "
            f"Fix: pip install 'tl-helpers[onnx]' (or: pip install onnx onnxruntime), or leave ONNX export off."
        ) from exc
    return onnx, onnxruntime


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: int,
    *,
    verify: bool = True,
    atol: float = 1e-3,
    exporter: Literal["auto", "legacy", "dynamo"] = "auto",
    metadata: Mapping[str, Any] | None = None,
) -> float:
    """Export ``model`` to ONNX (input ``images``: N×3×S×S normalised floats; output ``logits``: N×classes).

    The batch axis is dynamic; the spatial size is fixed at ``image_size`` (EfficientNet's
    "same" padding is traced for it). The model is exported from a CPU float copy in eval
    mode, so ``model`` itself is left as it was. Apply softmax to the logits for probabilities.

    Args:
        model: The trained model.
        path: The ``.onnx`` file to write (written atomically).
        image_size: Side length of the input images.
        verify: Run the exported file with onnxruntime on a random batch of 3 (not the traced
            batch size, which also checks the dynamic batch axis) and compare with PyTorch.
        atol: Largest absolute logit difference accepted.
        exporter: ``"legacy"``: the TorchScript exporter (needs only ``onnx``; a few seconds);
            ``"dynamo"``: the ``torch.export`` one (also needs ``onnxscript``; slower);
            ``"auto"``: dynamo when ``onnxscript`` is installed, else legacy.
        metadata: Stored in the ONNX file's ``metadata_props`` (values as JSON text), e.g.
            the classes and the preprocessing from ``config.json``.

    Returns:
        The largest absolute difference between onnxruntime's and PyTorch's logits
        (``nan`` when ``verify`` is false).

    Raises:
        OnnxExportError: onnx / onnxruntime are not installed (install the ``onnx`` extra), or
            the difference exceeds ``atol``.
    """
    import copy
    import importlib.util

    from tl_helpers.files import atomic_path

    onnx, ort = _require_onnx()
    if exporter == "auto":
        exporter = "dynamo" if importlib.util.find_spec("onnxscript") is not None else "legacy"
    cpu_model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()
    example = torch.zeros(2, 3, image_size, image_size)
    target = Path(path)
    with atomic_path(target) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            if exporter == "legacy":
                torch.onnx.export(
                    cpu_model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=17,
                )
            else:
                torch.onnx.export(
                    cpu_model,
                    (example,),
                    str(tmp),
                    dynamo=True,
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    external_data=False,
                    verbose=False,
                )
        if metadata:
            proto = onnx.load(str(tmp))
            for key, value in metadata.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = str(key), json.dumps(value, ensure_ascii=False)
            onnx.save(proto, str(tmp))
        if not verify:
            return math.nan
        generator = torch.Generator().manual_seed(0)
        batch = torch.randn(3, 3, image_size, image_size, generator=generator)
        with torch.inference_mode():
            expected = cpu_model(batch).float().numpy()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, min(torch.get_num_threads(), 4))
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        if got.shape != expected.shape:
            raise OnnxExportError(f"{target}: onnxruntime gave shape {got.shape}, PyTorch {expected.shape}")
        error = float(abs(got - expected).max())
        if not error <= atol:
            raise OnnxExportError(
                f"{target}: onnxruntime's logits differ from PyTorch's by up to {error:.2e} (> {atol:g}); "
                f"the ONNX file was not written. Fix: try exporter='legacy' or 'dynamo', or leave ONNX export off."
            )
    return error
