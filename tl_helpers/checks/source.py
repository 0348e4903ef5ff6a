"""Checks of "choosing the source model" (exercises 10): one backbone with two heads, the loss that trains both,
and the rule that keeps the cheaper source model unless a costlier one wins beyond the seed spread.

``two_heads`` builds the learner's class on a tiny stand-in for a timm backbone whose classifier was removed
(:class:`FakeBackbone`: a 3x3 convolution to 8 channels and global average pooling, ``num_features`` 8, so
``backbone(x)`` returns N x 8 pooled features), with 7 fine and 3 coarse classes, and tests what the module does:
one copy of the backbone, trainable, two outputs of the right sizes, logits rather than probabilities, gradients
of each head's loss reaching the backbone, and both heads reading the pooled features. That last one is seen from
derivatives: the conv's bias shifts the pooled features directly, so the derivatives of each output with respect
to it are the heads' Jacobians; a coarse head stacked on the fine logits has no derivative along the direction
the fine logits do not see (and the reverse).

``multitask_loss`` compares the learner's number with every formula of :func:`loss_variants` on two batches
(:func:`loss_cases`); each wrong formula gives a different number there (``tests/test_exercise_10.py``).

``choose_source`` runs the learner's rule on synthetic per-seed accuracies (:func:`source_cases`), built far from
ties, and names a wrong answer by the wrong rule of :data:`SOURCE_RULES` that makes the same choices in every case.
"""

from __future__ import annotations

import copy
import re
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tl_helpers.checks.core import CheckResult, fail, learner_error, ok, register
from tl_helpers.checks.registry import exercise

__all__ = [
    "NUM_COARSE",
    "NUM_FEATURES",
    "NUM_FINE",
    "SOURCE_RULES",
    "FakeBackbone",
    "loss_cases",
    "loss_variants",
    "reference_choice",
    "source_cases",
]

# ----------------------------------------------------------------------------- two_heads

NUM_FEATURES = 8
"""Pooled features of the check's backbone (EfficientNet-Lite0: 1280)."""
NUM_FINE, NUM_COARSE = 7, 3
"""Classes of the two heads the check asks for (other numbers than the notebook's 10 and 3, so that sizes
written into the class instead of read from its arguments show)."""


class FakeBackbone(nn.Module):
    """A tiny timm-style backbone after ``reset_classifier(0)``: ``backbone(x)`` returns N x ``num_features``.

    It has what a timm model offers (``num_features``, ``forward_features``, ``global_pool``, ``forward_head``,
    ``get_classifier``, ``reset_classifier``). The pooled features are ``conv_stem``'s output averaged over the
    image, so its bias shifts them directly.
    """

    def __init__(self, num_features: int = NUM_FEATURES) -> None:
        super().__init__()
        self.num_features = num_features
        self.conv_stem = nn.Conv2d(3, num_features, 3, padding=1)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier: nn.Module = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_stem(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def _labels(n: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def _reaches(loss: torch.Tensor, params: list[nn.Parameter]) -> bool:
    """Whether ``loss`` has a nonzero gradient with respect to any of ``params``."""
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return False
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def _graph_leaves(output: torch.Tensor) -> list[torch.Tensor]:
    """The tensors requiring gradients that ``output`` was computed from (the leaves of its autograd graph)."""
    leaves: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [output.grad_fn] if output.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def _jacobian(output: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    """d output[0, k] / d wrt for every k: one row per output of the first image."""
    rows = []
    for k in range(output.shape[1]):
        (grad,) = torch.autograd.grad(output[0, k], wrt, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(wrt) if grad is None else grad)
    return torch.stack(rows).double()


def _sees_beyond(j_reader: torch.Tensor, j_other: torch.Tensor) -> bool:
    """Whether the output with Jacobian ``j_reader`` changes along a direction the other output does not see.

    False when ``j_reader``'s rows lie in the row space of ``j_other``: the reader's output is (locally) a
    function of the other output alone.
    """
    rank = int(torch.linalg.matrix_rank(j_other, rtol=1e-6))
    _, _, vh = torch.linalg.svd(j_other)
    blind = vh[rank:]  # directions of the pooled features the other output does not see
    if blind.shape[0] == 0:
        return True
    scale = float(j_reader.norm()) + 1e-12
    return float((j_reader @ blind.T).norm()) / scale > 1e-3


def _shapes(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"one tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        parts = [str(tuple(o.shape)) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out]
        return f"a {type(out).__name__} of {len(out)}: {', '.join(parts)}"
    return type(out).__name__


@register("two_heads", 3, "one shared backbone, two trainable heads on the same pooled features, logits out")
def _check_two_heads(TwoHeads: Any) -> CheckResult:  # noqa: N803 - the learner's class
    if isinstance(TwoHeads, nn.Module):
        return fail(
            "Pass the class TwoHeads itself (no parentheses), not a model built from it: the check builds one on "
            "a small backbone of its own.",
            mistake="not_a_class",
        )
    if not isinstance(TwoHeads, type):
        return fail(f"Pass your class TwoHeads itself; got {type(TwoHeads).__name__}.", mistake="not_a_class")
    if not issubclass(TwoHeads, nn.Module):
        return fail(
            "TwoHeads must subclass nn.Module (class TwoHeads(nn.Module): ... and super().__init__() first), so "
            "that its layers are registered, trained and saved with it.",
            mistake="not_a_module",
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = FakeBackbone()
        try:
            model = TwoHeads(backbone, NUM_FINE, NUM_COARSE)
        except NotImplementedError:
            raise
        except Exception as exc:
            return learner_error(exc, "TwoHeads(backbone, num_fine, num_coarse)")
    backbone_params = list(backbone.parameters())
    held = {id(p) for p in model.parameters()}
    stems = [p for p in model.parameters() if p.shape == backbone.conv_stem.weight.shape]
    if not all(id(p) in held for p in backbone_params) or len(stems) > 1:
        if len(stems) > 1:
            how = f"holds {len(stems)} backbones (the one it was given and a copy, e.g. one per head)"
        elif stems:
            how = "holds a copy of the backbone it was given (copy.deepcopy), not the backbone itself"
        else:
            how = "does not hold the backbone it was given (it builds or loads another one)"
        return fail(
            f"Your module {how}: there must be ONE backbone, the one passed to __init__, shared by both heads "
            "(self.backbone = backbone). Separate copies train separate weights, at twice the memory and compute, "
            "and the coarse labels no longer shape the features the fine head reads, which is the point of one "
            "backbone for two tasks.",
            mistake="two_backbones",
        )
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    if frozen:
        return fail(
            f"TwoHeads froze the backbone ({frozen[0]} has requires_grad=False): both losses are meant to train "
            "the shared features. Leave requires_grad as the backbone comes; freezing, if wanted, is a decision "
            "taken outside the module.",
            mistake="backbone_frozen",
        )
    x = _images()
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except NotImplementedError:
        raise
    except Exception as exc:
        sizes = re.search(r"(\d+)x(\d+) and (\d+)x(\d+)", str(exc))
        if sizes and int(sizes.group(2)) == NUM_FEATURES:
            return fail(
                f"A head expects {sizes.group(3)} input features, but the backbone gives {NUM_FEATURES} here "
                f"({exc}). Read the number from the backbone (backbone.num_features; 1280 for "
                "EfficientNet-Lite0), do not write it in.",
                mistake="wrong_in_features",
            )
        return learner_error(exc, "TwoHeads.forward")
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)):
        return fail(
            f"forward should return a pair of tensors, (fine_logits, coarse_logits); it returned {_shapes(out)}. "
            "Two outputs, because each head has its own labels and its own loss.",
            mistake="not_a_pair",
        )
    fine, coarse = out
    n = len(x)
    if fine.shape == (n, NUM_COARSE) and coarse.shape == (n, NUM_FINE):
        return fail(
            f"The outputs come in the wrong order: with num_fine={NUM_FINE} and num_coarse={NUM_COARSE}, the "
            f"first output has {NUM_COARSE} columns and the second {NUM_FINE}. Return (fine_logits, "
            "coarse_logits), in that order, each from the head sized for it.",
            mistake="heads_swapped",
        )
    if fine.shape != (n, NUM_FINE) or coarse.shape != (n, NUM_COARSE):
        if fine.ndim == 2 and coarse.ndim == 2 and len(fine) == n and len(coarse) == n:
            return fail(
                f"For {n} images with num_fine={NUM_FINE} and num_coarse={NUM_COARSE} the outputs should be "
                f"{n} x {NUM_FINE} and {n} x {NUM_COARSE}; yours are {tuple(fine.shape)} and "
                f"{tuple(coarse.shape)}. Size the heads from the arguments num_fine and num_coarse, not from "
                "numbers written into the class (10 and 3 are EuroSAT's).",
                mistake="wrong_head_size",
            )
        return fail(
            f"For {n} images the outputs should be {n} x {NUM_FINE} and {n} x {NUM_COARSE}; yours are "
            f"{tuple(fine.shape)} and {tuple(coarse.shape)}. backbone(x) already returns pooled features, one "
            "row per image: put each head directly on them.",
            mistake="wrong_shape",
        )
    for name, logits in (("fine", fine), ("coarse", coarse)):
        sums = logits.sum(1)
        if bool((logits >= 0).all()) and torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            return fail(
                f"The {name} output is probabilities (each row sums to 1): forward applies a softmax. "
                "F.cross_entropy applies log-softmax itself and expects raw scores (logits); return the heads' "
                "outputs as they are and take softmax only when you want probabilities to read.",
                mistake="softmax_in_forward",
            )
    try:
        with torch.no_grad():
            again = model(x)
    except Exception as exc:  # pragma: no cover - it ran once already
        return learner_error(exc, "TwoHeads.forward")
    if not (torch.allclose(again[0], fine) and torch.allclose(again[1], coarse)):
        return fail(
            "Two calls on the same images, in eval mode, give different outputs: a layer is created inside "
            "forward (new random weights at every call, never trained), or dropout ignores eval mode. Create "
            "the heads once, in __init__, as attributes (self.fine_head = nn.Linear(...)).",
            mistake="heads_created_in_forward",
        )
    model.train()
    fine, coarse = model(x)
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    if frozen:
        return fail(
            f"forward froze the backbone ({frozen[0]} has requires_grad=False after a call): both losses are "
            "meant to train the shared features. Leave requires_grad alone inside the module.",
            mistake="backbone_frozen",
        )
    stray = [t for o in (fine, coarse) for t in _graph_leaves(o) if id(t) not in held]
    if stray:
        return fail(
            f"The outputs use a trainable tensor of shape {tuple(stray[0].shape)} that is not among the module's "
            "parameters: a head kept in a plain Python list or dict (use the attributes, nn.ModuleList or "
            "nn.ModuleDict). model.parameters() misses it, so an optimizer built from them never trains it, and "
            ".to(device) and state_dict() leave it behind.",
            mistake="heads_not_registered",
        )
    y_fine, y_coarse = _labels(n, NUM_FINE, 1), _labels(n, NUM_COARSE, 2)
    fine_reaches = _reaches(F.cross_entropy(fine, y_fine), backbone_params)
    coarse_reaches = _reaches(F.cross_entropy(coarse, y_coarse), backbone_params)
    if not fine_reaches and not coarse_reaches:
        return fail(
            "Neither loss sends a gradient into the backbone: the features are computed under torch.no_grad() "
            "or detached (.detach()) in forward, so the backbone never learns. Call self.backbone(x) normally; "
            "to freeze it, set requires_grad outside the module.",
            mistake="backbone_frozen",
        )
    if not coarse_reaches:
        return fail(
            "The coarse loss sends no gradient into the backbone: the coarse head reads features that were "
            "detached (.detach(), torch.no_grad(), or the fine logits detached). The coarse labels are there to "
            "train the shared features; feed the coarse head the same pooled features as the fine head, "
            "undetached.",
            mistake="coarse_detached",
        )
    if not fine_reaches:
        return fail(
            "The fine loss sends no gradient into the backbone: the fine head reads detached features "
            "(.detach() or torch.no_grad() on its path). Feed both heads the same pooled features, undetached.",
            mistake="fine_detached",
        )
    model.eval()
    bias = backbone.conv_stem.bias  # shifts the pooled features one for one
    fine, coarse = model(x)
    j_fine, j_coarse = _jacobian(fine, bias), _jacobian(coarse, bias)
    # the fine head first: stacked on the 3 coarse logits, each output is also a function of the other
    if not _sees_beyond(j_fine, j_coarse):
        return fail(
            f"The fine head is stacked on the coarse head: the fine output depends on the images only through the "
            f"{NUM_COARSE} coarse logits, too few to tell {NUM_FINE} classes apart. Both heads should read the "
            "backbone's pooled features directly, side by side.",
            mistake="fine_from_coarse_logits",
        )
    if not _sees_beyond(j_coarse, j_fine):
        return fail(
            f"The coarse head is stacked on the fine head: the coarse output depends on the images only through "
            f"the {NUM_FINE} fine logits (the coarse head's input is the fine output). Both heads should read "
            "the backbone's pooled features directly, side by side: fine = self.fine_head(features), coarse = "
            "self.coarse_head(features). Stacked, the coarse labels reach the backbone only through the fine head, "
            "and every coarse error also moves the fine head's weights, which only the fine labels should set.",
            mistake="coarse_from_fine_logits",
        )
    return ok(
        f"One shared, trainable backbone; two heads side by side on its {NUM_FEATURES} pooled features "
        f"({NUM_FINE} and {NUM_COARSE} logits, in that order); each head's loss alone reaches the backbone."
    )


# ----------------------------------------------------------------------------- multitask_loss

LossCase = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]


def loss_cases() -> dict[str, LossCase]:
    """The batches ``multitask_loss`` is called on: name -> (fine_logits, y_fine, coarse_logits, y_coarse, weight).

    ``same_batch``: 6 images in both batches, 5 fine and 3 coarse classes, every label below 3 (so swapped labels
    still compute), weight 0.3. ``other_images``: 4 fine images and 7 coarse ones, as when the two labels come
    from different images, weight 2.5.
    """
    g = torch.Generator().manual_seed(10)
    same = (
        torch.randn(6, 5, generator=g) * 2.0,
        torch.tensor([0, 2, 1, 2, 0, 1]),
        torch.randn(6, 3, generator=g) * 2.0 + torch.tensor([1.0, 0.0, -1.0]),
        torch.tensor([1, 0, 2, 2, 1, 0]),
        0.3,
    )
    other = (
        torch.randn(4, 5, generator=g) * 1.5,
        torch.tensor([4, 0, 3, 1]),
        torch.randn(7, 3, generator=g) * 1.5,
        torch.tensor([2, 1, 0, 0, 2, 1, 2]),
        2.5,
    )
    return {"same_batch": same, "other_images": other}


def _term(kind: str, logits: torch.Tensor, y: torch.Tensor) -> float:
    if kind == "ce":
        return float(F.cross_entropy(logits, y))
    if kind == "softmax":
        return float(F.cross_entropy(logits.softmax(1), y))
    if kind == "sum":
        return float(F.cross_entropy(logits, y, reduction="sum"))
    if kind == "nll":
        return float(F.nll_loss(logits, y))
    raise ValueError(kind)


_KIND_MISTAKE = {"softmax": "softmax_before_ce", "sum": "summed_not_mean", "nll": "nll_without_log_softmax"}


def loss_variants(
    fine: torch.Tensor, y_fine: torch.Tensor, coarse: torch.Tensor, y_coarse: torch.Tensor, weight: float
) -> list[tuple[str | None, float]]:
    """The right loss (mistake ``None``) and each wrong formula, named by its mistake: ``(mistake, value)``."""
    f, c = _term("ce", fine, y_fine), _term("ce", coarse, y_coarse)
    out: list[tuple[str | None, float]] = [(None, f + weight * c)]
    for kind, mistake in _KIND_MISTAKE.items():
        kf, kc = _term(kind, fine, y_fine), _term(kind, coarse, y_coarse)
        out += [(mistake, kf + weight * kc), (mistake, kf + weight * c), (mistake, f + weight * kc)]
    out += [
        ("weight_ignored", f + c),
        ("weight_on_fine", weight * f + c),
        ("weighted_average", (1 - weight) * f + weight * c),
        ("only_fine", f),
        ("only_coarse", weight * c),
        ("only_coarse", c),
    ]
    if len(fine) == len(coarse) and int(y_fine.max()) < coarse.shape[1]:
        swapped_f, swapped_c = _term("ce", fine, y_coarse), _term("ce", coarse, y_fine)
        out += [("labels_swapped", swapped_f + weight * swapped_c), ("labels_swapped", swapped_c + weight * swapped_f)]
    return out


_LOSS_FEEDBACK = {
    "softmax_before_ce": "You apply softmax before cross-entropy: F.cross_entropy (and nn.CrossEntropyLoss) applies "
    "log-softmax itself and expects raw logits. On probabilities the loss is squashed into a narrow range and its "
    "gradients nearly vanish. Pass the logits as they are.",
    "summed_not_mean": "Your loss sums over the images (reduction='sum') instead of averaging: it then grows with "
    "the batch size, so the learning rate and the weight mean something else for each batch size, and a fine "
    "batch and a coarse batch of different sizes weigh differently. Use the mean (F.cross_entropy's default).",
    "nll_without_log_softmax": "You use F.nll_loss on the logits: nll_loss expects log-probabilities (it only picks "
    "the label's entry and negates it), so on raw logits it is no cross-entropy and can go below zero without end. "
    "Use F.cross_entropy on the logits (or nll_loss on log_softmax(logits, dim=1)).",
    "weight_ignored": "The weight is ignored: your loss is fine + coarse whatever weight it gets. The weight sets "
    "how much the coarse task pulls on the shared backbone; multiply the coarse term by it.",
    "weight_on_fine": "The weight multiplies the fine term: the loss is fine cross-entropy + weight × coarse "
    "cross-entropy, so the weight goes on the coarse term (the helper task), and the fine task keeps weight 1.",
    "weighted_average": "You take (1 − weight) × fine + weight × coarse: that also shrinks the fine term when the "
    "weight grows. The loss asked for is fine + weight × coarse: the main task always weighs 1.",
    "only_fine": "Your loss is the fine cross-entropy only: the coarse term is missing, so the coarse head and its "
    "labels train nothing. Add weight × the coarse cross-entropy.",
    "only_coarse": "Your loss has the coarse term only: the fine cross-entropy is missing, so the fine head, the "
    "one the task is about, never trains. The loss is fine + weight × coarse.",
    "labels_swapped": "The labels are swapped: the fine logits are scored against the coarse labels and the coarse "
    "logits against the fine ones. Pair each head's logits with its own labels: F.cross_entropy(fine_logits, "
    "y_fine) and F.cross_entropy(coarse_logits, y_coarse).",
}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


@register("multitask_loss", 2, "fine cross-entropy + weight × coarse cross-entropy, means, on the logits")
def _check_multitask_loss(multitask_loss: Any) -> CheckResult:
    if not callable(multitask_loss):
        return fail(
            "Pass your function multitask_loss itself (no parentheses), not its result.", mistake="not_a_function"
        )
    for name, case in loss_cases().items():
        fine, y_fine, coarse, y_coarse, weight = case
        inputs = [
            fine.clone().requires_grad_(True),
            y_fine.clone(),
            coarse.clone().requires_grad_(True),
            y_coarse.clone(),
        ]
        try:
            loss = multitask_loss(*inputs, weight)
        except NotImplementedError:
            raise
        except Exception as exc:
            result = learner_error(exc, "multitask_loss")
            if name == "other_images":
                return fail(
                    result.feedback + f" The fine and the coarse batch can hold different images, here "
                    f"{len(fine)} and {len(coarse)}: compute each cross-entropy on its own batch, then add.",
                    mistake=result.mistake,
                )
            return result
        if not isinstance(loss, torch.Tensor):
            extra = " (.item() and float() give a number that backward() cannot go through)"
            return fail(
                f"multitask_loss should return the loss as a tensor, got {type(loss).__name__}{extra}: "
                "loss.backward() needs the tensor to reach both heads and the backbone.",
                mistake="loss_not_a_tensor",
            )
        if loss.numel() != 1:
            return fail(
                f"multitask_loss should return one number (a 0-dimensional tensor), got shape {tuple(loss.shape)}: "
                "use the mean cross-entropy of each batch (F.cross_entropy's default reduction).",
                mistake="not_a_scalar",
            )
        if not loss.requires_grad:
            return fail(
                "The loss is cut from the graph (it does not require grad although the logits do): computed "
                "under torch.no_grad(), through .detach(), NumPy or Python numbers. loss.backward() would fail. "
                "Compute it with torch operations on the logits you are given.",
                mistake="loss_detached",
            )
        if not (torch.equal(inputs[0].detach(), fine) and torch.equal(inputs[2].detach(), coarse)) or not (
            torch.equal(inputs[1], y_fine) and torch.equal(inputs[3], y_coarse)
        ):
            return fail(
                "multitask_loss changed its inputs in place (an in-place softmax_, a label tensor overwritten...): "
                "the logits are still needed for the backward pass and by the caller. Compute without modifying them.",
                mistake="inputs_modified",
            )
        value = float(loss.detach())
        variants = loss_variants(fine, y_fine, coarse, y_coarse, weight)
        if _close(value, variants[0][1]):
            continue
        for mistake, expected in variants[1:]:
            if _close(value, expected):
                return fail(_LOSS_FEEDBACK[mistake], mistake=mistake)
        return fail(
            f"With {len(fine)} fine and {len(coarse)} coarse images and weight {weight}, the loss should be "
            f"{variants[0][1]:.4f} (mean cross-entropy of the fine logits against y_fine, plus weight × the mean "
            f"cross-entropy of the coarse logits against y_coarse); yours is {value:.4f}.",
            mistake="wrong_value",
        )
    return ok(
        "fine cross-entropy + weight × coarse cross-entropy, each a mean over its own batch, computed on the logits "
        "and differentiable."
    )


# ----------------------------------------------------------------------------- choose_source

Results = dict[str, list[float]]
Costs = dict[str, float]


def _by_cost(results: Results, costs: Costs) -> list[str]:
    return sorted(results, key=lambda name: costs[name])


def _worst_beats_best(new: list[float], current: list[float]) -> bool:
    return min(new) > max(current)


def _switch_rule(
    order: list[str], results: Results, beats: Callable[[list[float], list[float]], bool] = _worst_beats_best
) -> str:
    """Walk ``order``, switching to a model whenever ``beats(its accuracies, the current choice's)``."""
    current = order[0]
    for name in order[1:]:
        if beats(results[name], results[current]):
            current = name
    return current


def reference_choice(results: Results, costs: Costs) -> str:
    """The stated rule: from the cheapest up, switch to a costlier model only when its worst seed beats the
    current choice's best seed."""
    return _switch_rule(_by_cost(results, costs), results)


def _largest(results: Results, costs: Costs) -> str:
    return max(results, key=lambda name: costs[name])


def _cheapest(results: Results, costs: Costs) -> str:
    return min(results, key=lambda name: costs[name])


def _highest_mean(results: Results, costs: Costs) -> str:
    return max(results, key=lambda name: statistics.mean(results[name]))


def _mean_switch(results: Results, costs: Costs) -> str:
    current, *rest = _by_cost(results, costs)
    for name in rest:
        if statistics.mean(results[name]) > statistics.mean(results[current]):
            current = name
    return current


def _dict_order(results: Results, costs: Costs) -> str:
    return _switch_rule(list(results), results)


def _name_order(results: Results, costs: Costs) -> str:
    return _switch_rule(sorted(results), results)


def _costliest_first(results: Results, costs: Costs) -> str:
    return _switch_rule(_by_cost(results, costs)[::-1], results)


def _against_cheapest(results: Results, costs: Costs) -> str:
    cheapest, *rest = _by_cost(results, costs)
    chosen = cheapest
    for name in rest:
        if min(results[name]) > max(results[cheapest]):
            chosen = name
    return chosen


def _first_switch(results: Results, costs: Costs) -> str:
    current, *rest = _by_cost(results, costs)
    for name in rest:
        if min(results[name]) > max(results[current]):
            return name
    return current


def _paired_seeds(results: Results, costs: Costs) -> str:
    return _switch_rule(_by_cost(results, costs), results, lambda new, cur: all(a > b for a, b in zip(new, cur)))


def _best_vs_best(results: Results, costs: Costs) -> str:
    return _switch_rule(_by_cost(results, costs), results, lambda new, cur: max(new) > max(cur))


def _worst_vs_worst(results: Results, costs: Costs) -> str:
    return _switch_rule(_by_cost(results, costs), results, lambda new, cur: min(new) > min(cur))


SOURCE_RULES: dict[str, list[Callable[[Results, Costs], str]]] = {
    "largest_model": [_largest],
    "cheapest_always": [_cheapest],
    "highest_mean": [_highest_mean, _mean_switch],
    "ignores_cost_order": [_dict_order, _name_order, _costliest_first],
    "compares_to_cheapest_only": [_against_cheapest],
    "stops_at_first_switch": [_first_switch],
    "paired_by_seed": [_paired_seeds],
    "wrong_seeds_compared": [_best_vs_best, _worst_vs_worst],
}
"""Mistake -> the wrong rules that make it: a learner's choices equal to one of them in every case get its name."""


def source_cases() -> dict[str, tuple[Results, Costs]]:
    """The cases ``choose_source`` is run on: name -> (per-seed test accuracies, GFLOPs per image).

    Every comparison the rule makes is at least 2 points from a tie (``tests/test_exercise_10.py``), and every
    wrong rule of :data:`SOURCE_RULES` chooses differently from the right one in some case, and from each
    wrong rule of another name. ``clear``: the costlier model is 10 points better in every seed. ``overlap``:
    it is ahead in every seed and in mean, but its worst seed (73 %) is below the cheaper model's best (78 %).
    ``chain``: three models, each clearly above the previous one. ``beats_cheapest_only``: the costliest beats
    the cheapest clearly, but not the middle one, which did too. ``costliest_listed_first``: the dictionaries
    list the costlier model first; the two overlap. ``costlier_worse``: the costlier model is clearly worse.
    ``lucky_seed``: the costlier model has the best single seed and a lower mean. ``better_worst_seed``: its
    worst seed and its mean are higher, but it loses one seed. ``steadier``: the same, with a lower best seed.
    ``names_mislead``: alphabetical order differs
    from cost order, and the middle model, first by name, overlaps the cheapest.
    """
    lite = {"lite0": 0.39, "lite1": 0.61, "lite2": 0.87}
    resnet = {"resnet18": 1.8, "resnet50": 4.1}
    return {
        "clear": ({"lite0": [0.70, 0.71, 0.69], "lite1": [0.80, 0.81, 0.79]}, {"lite0": 0.39, "lite1": 0.61}),
        "overlap": ({"lite0": [0.70, 0.78, 0.74], "lite1": [0.73, 0.82, 0.78]}, {"lite0": 0.39, "lite1": 0.61}),
        "chain": ({"lite0": [0.60, 0.62, 0.61], "lite1": [0.70, 0.72, 0.71], "lite2": [0.80, 0.83, 0.81]}, lite),
        "beats_cheapest_only": (
            {"lite0": [0.70, 0.72, 0.71], "lite1": [0.80, 0.82, 0.81], "lite2": [0.76, 0.90, 0.80]},
            lite,
        ),
        "costliest_listed_first": (
            {"resnet50": [0.72, 0.80, 0.76], "resnet18": [0.70, 0.76, 0.73]},
            {"resnet50": 4.1, "resnet18": 1.8},
        ),
        "costlier_worse": ({"resnet18": [0.80, 0.82, 0.81], "resnet50": [0.74, 0.76, 0.75]}, resnet),
        "lucky_seed": ({"resnet18": [0.70, 0.72, 0.74], "resnet50": [0.60, 0.76, 0.62]}, resnet),
        "better_worst_seed": ({"resnet18": [0.70, 0.80, 0.75], "resnet50": [0.72, 0.76, 0.83]}, resnet),
        "steadier": ({"resnet18": [0.70, 0.80, 0.75], "resnet50": [0.74, 0.78, 0.79]}, resnet),
        "names_mislead": (
            {"small": [0.70, 0.78, 0.74], "base": [0.72, 0.82, 0.77], "large": [0.60, 0.70, 0.65]},
            {"small": 1.1, "base": 4.4, "large": 15.4},
        ),
    }


def _described(results: Results, costs: Costs) -> str:
    return "; ".join(
        f"{name} ({costs[name]:g} GFLOPs): {', '.join(f'{100 * a:.0f}' for a in results[name])} %"
        for name in _by_cost(results, costs)
    )


_SOURCE_FEEDBACK = {
    "largest_model": "You always return the costliest model. A bigger source model, better on ImageNet, is not "
    "automatically better on your task, and it costs more at every prediction: keep the cheaper one unless the "
    "costlier one is better beyond the spread of the seeds.",
    "cheapest_always": "You always return the cheapest model, even where a costlier one is better in every seed by "
    "far more than the spread. Switch when the costlier model's worst seed beats the current choice's best seed.",
    "highest_mean": "You compare mean accuracies and ignore the spread over seeds: a mean a few points higher is "
    "noise when the seeds overlap. Switch only when the costlier model's worst seed beats the current choice's "
    "best seed.",
    "ignores_cost_order": "You go through the models in the order the dictionary lists them (or by name), not from "
    "the cheapest to the costliest: the rule starts from the cheapest model and climbs in cost. Sort the names "
    "by their cost: sorted(results, key=costs.get).",
    "compares_to_cheapest_only": "You compare every model with the cheapest one, not with the current choice: "
    "after a switch, the next costlier model has to beat the model you switched to, or its extra cost buys "
    "nothing.",
    "stops_at_first_switch": "You stop at the first switch: after switching, keep going up in cost, and switch "
    "again when the next model's worst seed beats the new choice's best seed.",
    "paired_by_seed": "You switch when the costlier model wins seed by seed. The rule here is stricter: no overlap "
    "at all, its worst seed above the current choice's best seed. Winning each seed by a little can still be "
    "within the seed-to-seed spread.",
    "wrong_seeds_compared": "You compare the wrong seeds (best with best, or worst with worst). The costlier model "
    "must be better whatever the luck of the seeds: its WORST seed above the current choice's BEST seed.",
}


@register("choose_source", 3, "keep the cheaper source model unless a costlier one wins with no seed overlap")
def _check_choose_source(choose_source: Any) -> CheckResult:
    if not callable(choose_source):
        return fail(
            "Pass your function choose_source itself (no parentheses), not its result.", mistake="not_a_function"
        )
    cases = source_cases()
    answers: dict[str, str] = {}
    for name, (results, costs) in cases.items():
        given_results, given_costs = copy.deepcopy(results), dict(costs)
        try:
            answer = choose_source(given_results, given_costs)
        except NotImplementedError:
            raise
        except Exception as exc:
            return learner_error(exc, "choose_source")
        if given_results != results or given_costs != costs:
            return fail(
                "choose_source changed the dictionaries it was given (a list sorted in place, an entry removed): "
                "the per-seed lists pair up by seed and the caller still needs them. Use min(), max() or sorted(), "
                "which leave them as they are.",
                mistake="inputs_modified",
            )
        if not isinstance(answer, str):
            return fail(
                f"choose_source should return one model name, a string such as 'lite0'; got "
                f"{type(answer).__name__}: {str(answer)[:80]}.",
                mistake="wrong_type",
            )
        if answer not in results:
            return fail(
                f"choose_source returned {answer!r}, which is not one of the models it was given "
                f"({', '.join(results)}): return one of the dictionary's keys.",
                mistake="unknown_name",
            )
        answers[name] = answer
    wrong = [name for name, (results, costs) in cases.items() if answers[name] != reference_choice(results, costs)]
    if not wrong:
        return ok(
            "Climbs from the cheapest model and switches only when the costlier model's worst seed beats the "
            "current choice's best: keeps the cheaper model when the seeds overlap, switches twice in a chain, "
            "and compares with the current choice, whatever the order of the dictionary."
        )
    results, costs = cases[wrong[0]]
    example = (
        f" For example, with {_described(results, costs)}, you return {answers[wrong[0]]!r}; the rule gives "
        f"{reference_choice(results, costs)!r}."
    )
    for mistake, rules in SOURCE_RULES.items():
        for rule in rules:
            if all(answers[name] == rule(*cases[name]) for name in cases):
                return fail(_SOURCE_FEEDBACK[mistake] + example, mistake=mistake)
    return fail(
        "Not the rule yet: sort the models by cost; start with the cheapest as the choice; for each costlier model, "
        "switch to it when min(its accuracies) > max(the current choice's accuracies)." + example,
        mistake="wrong_choice",
    )


# ----------------------------------------------------------------------------- hints (exercises of 10)

exercise(
    "two_heads",
    "One backbone, stored once, and two small heads that both read the backbone's pooled features, side by side: "
    "forward returns the fine logits and the coarse logits, in that order, both raw scores.",
    "With its classifier removed, backbone(x) returns N x backbone.num_features; nn.Linear(in_features, "
    "out_features) makes a head; attributes set in __init__ after super().__init__() are registered, so "
    "model.parameters() holds the backbone's and both heads' weights.",
    "def __init__(self, backbone, num_fine, num_coarse):\n"
    "    super().__init__()\n"
    "    self.backbone = backbone\n"
    "    self.fine_head = nn.Linear(<features>, <classes>)  # and the coarse head the same way\n"
    "def forward(self, x):\n"
    "    features = <the backbone on x>\n"
    "    return <fine head on features>, <coarse head on the same features>",
)
exercise(
    "multitask_loss",
    "Each head is scored against its own labels with the usual classification loss, averaged over its own batch; "
    "the coarse term is scaled by the weight, the fine term is not, and the two are added.",
    "F.cross_entropy(logits, labels) takes raw logits (it applies log-softmax itself) and averages over the batch "
    "by default; the fine and the coarse batch may hold different images and sizes.",
    "return F.cross_entropy(<fine logits>, <fine labels>) + <weight> * F.cross_entropy(<...>, <...>)",
)
exercise(
    "choose_source",
    "Start from the cheapest model and climb in cost; a costlier model replaces the current choice only when it "
    "is better whatever the seeds: every one of its seeds above every seed of the current choice.",
    "sorted(results, key=costs.get) lists the names from the cheapest; min(results[name]) is a model's worst seed, "
    "max(...) its best.",
    "order = <names sorted by cost>\n"
    "chosen = order[0]\n"
    "for name in order[1:]:\n"
    "    if <worst seed of name> > <best seed of chosen>:\n"
    "        chosen = name\n"
    "return chosen",
)
