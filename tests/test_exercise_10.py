"""Exercise 10 (choosing the source model, one backbone for two tasks): wrong answers written the way learners
write them, each named by its feedback; correct answers written differently from the solution, which pass."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import statistics
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tl_helpers import exercises
from tl_helpers.checks import run_check
from tl_helpers.checks.source import (
    NUM_COARSE,
    NUM_FEATURES,
    NUM_FINE,
    SOURCE_RULES,
    FakeBackbone,
    loss_cases,
    loss_variants,
    reference_choice,
    source_cases,
)

REPO = Path(__file__).resolve().parents[1]
STEM = "10_choosing_the_source_exercises"

GRADED_VARIANTS = [
    (
        STEM,
        "    return F.cross_entropy(fine_logits, y_fine) + weight * F.cross_entropy(coarse_logits, y_coarse)",
        "    return weight * F.cross_entropy(fine_logits, y_fine) + F.cross_entropy(coarse_logits, y_coarse)",
        "multitask_loss",
        "weight multiplies the fine term",
    ),
    (
        STEM,
        "        if min(results[name]) > max(results[chosen]):",
        "        if sum(results[name]) > sum(results[chosen]):",
        "choose_source",
        "spread over seeds",
    ),
    (
        STEM,
        "        return self.fine_head(features), self.coarse_head(features)",
        "        return self.fine_head(features), self.coarse_head(features.detach())",
        "two_heads",
        "coarse loss sends no gradient",
    ),
    (
        STEM,
        "        self.coarse_head = nn.Linear(backbone.num_features, num_coarse)",
        "        self.coarse_head = nn.Sequential(nn.Dropout(0.2), nn.Linear(backbone.num_features, num_coarse))",
        "two_heads",
        None,
    ),
]


# ----------------------------------------------------------------------------- two_heads


class SolutionHeads(nn.Module):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone = backbone
        self.fine_head = nn.Linear(backbone.num_features, num_fine)
        self.coarse_head = nn.Linear(backbone.num_features, num_coarse)

    def forward(self, x):
        features = self.backbone(x)
        return self.fine_head(features), self.coarse_head(features)


class SequentialHeads(nn.Module):  # another correct way: hidden layers and dropout (off in eval mode)
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.body = backbone
        d = backbone.num_features

        def head(n):
            return nn.Sequential(nn.Dropout(0.3), nn.Linear(d, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, n))

        self.heads = nn.ModuleDict({"fine": head(num_fine), "coarse": head(num_coarse)})

    def forward(self, x):
        h = self.body(x)
        return self.heads["fine"](h), self.heads["coarse"](h)


class OneLinearSplit(nn.Module):  # another correct way: one layer with num_fine + num_coarse outputs, split
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone = backbone
        self.num_fine = num_fine
        self.both = nn.Linear(backbone.num_features, num_fine + num_coarse)

    def forward(self, x):
        out = self.both(self.backbone(x))
        return out[:, : self.num_fine], out[:, self.num_fine :]


class TimmStyleHeads(nn.Module):  # another correct way: timm's forward_features / forward_head, a shared layer
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone = backbone
        self.shared = nn.Sequential(nn.Linear(backbone.num_features, 64), nn.GELU())
        self.heads = nn.ModuleList([nn.Linear(64, num_fine), nn.Linear(64, num_coarse)])

    def forward(self, x):
        pooled = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        h = self.shared(pooled)
        return tuple(head(h) for head in self.heads)


class LogSoftmaxHeads(SolutionHeads):  # log-probabilities: cross-entropy of them equals that of the logits
    def forward(self, x):
        fine, coarse = super().forward(x)
        return fine.log_softmax(1), coarse.log_softmax(1)


@pytest.mark.parametrize("answer", [SolutionHeads, SequentialHeads, OneLinearSplit, TimmStyleHeads, LogSoftmaxHeads])
def test_two_heads_correct_answers_pass(answer):
    result = run_check("two_heads", answer)
    assert result.passed, result.feedback


class CopiedBackbone(SolutionHeads):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__(copy.deepcopy(backbone), num_fine, num_coarse)


class BackbonePerHead(nn.Module):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.fine_backbone, self.coarse_backbone = backbone, copy.deepcopy(backbone)
        self.fine_head = nn.Linear(backbone.num_features, num_fine)
        self.coarse_head = nn.Linear(backbone.num_features, num_coarse)

    def forward(self, x):
        return self.fine_head(self.fine_backbone(x)), self.coarse_head(self.coarse_backbone(x))


class NewBackbone(SolutionHeads):  # ignores the backbone it is given and builds its own
    def __init__(self, backbone, num_fine, num_coarse):
        nn.Module.__init__(self)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fine_head, self.coarse_head = nn.Linear(4, num_fine), nn.Linear(4, num_coarse)


class Swapped(SolutionHeads):
    def forward(self, x):
        features = self.backbone(x)
        return self.coarse_head(features), self.fine_head(features)


class EuroSATSizes(SolutionHeads):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__(backbone, 10, 3)


class Softmaxed(SolutionHeads):
    def forward(self, x):
        fine, coarse = super().forward(x)
        return fine.softmax(dim=1), coarse.softmax(dim=1)


class CoarseSoftmaxed(SolutionHeads):
    def forward(self, x):
        fine, coarse = super().forward(x)
        return fine, F.softmax(coarse, dim=-1)


class FrozenInside(SolutionHeads):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__(backbone, num_fine, num_coarse)
        for p in self.backbone.parameters():
            p.requires_grad = False


class FrozenInForward(SolutionHeads):
    def forward(self, x):
        self.backbone.requires_grad_(False)
        return super().forward(x)


class NoGradFeatures(SolutionHeads):
    def forward(self, x):
        with torch.no_grad():
            features = self.backbone(x)
        return self.fine_head(features), self.coarse_head(features)


class CoarseDetached(SolutionHeads):
    def forward(self, x):
        features = self.backbone(x)
        return self.fine_head(features), self.coarse_head(features.detach())


class FineDetached(SolutionHeads):
    def forward(self, x):
        features = self.backbone(x)
        return self.fine_head(features.detach()), self.coarse_head(features)


class Stacked(nn.Module):  # the coarse head reads the fine logits
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone = backbone
        self.fine_head = nn.Linear(backbone.num_features, num_fine)
        self.coarse_head = nn.Linear(num_fine, num_coarse)

    def forward(self, x):
        fine = self.fine_head(self.backbone(x))
        return fine, self.coarse_head(fine)


class StackedOnProbabilities(Stacked):
    def forward(self, x):
        fine = self.fine_head(self.backbone(x))
        return fine, self.coarse_head(torch.relu(fine).softmax(1))


class FineOnCoarse(nn.Module):  # the reverse: the fine head reads the coarse logits
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone = backbone
        self.coarse_head = nn.Linear(backbone.num_features, num_coarse)
        self.fine_head = nn.Linear(num_coarse, num_fine)

    def forward(self, x):
        coarse = self.coarse_head(self.backbone(x))
        return self.fine_head(coarse), coarse


class HardcodedFeatures(SolutionHeads):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__(backbone, num_fine, num_coarse)
        self.fine_head, self.coarse_head = nn.Linear(1280, num_fine), nn.Linear(1280, num_coarse)


class HeadsInAList(nn.Module):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone = backbone
        self.heads = [nn.Linear(backbone.num_features, num_fine), nn.Linear(backbone.num_features, num_coarse)]

    def forward(self, x):
        features = self.backbone(x)
        return self.heads[0](features), self.heads[1](features)


class HeadsInForward(nn.Module):
    def __init__(self, backbone, num_fine, num_coarse):
        super().__init__()
        self.backbone, self.sizes = backbone, (num_fine, num_coarse)

    def forward(self, x):
        features = self.backbone(x)
        return tuple(nn.Linear(features.shape[1], n)(features) for n in self.sizes)


class Concatenated(SolutionHeads):
    def forward(self, x):
        return torch.cat(super().forward(x), dim=1)


class AsDict(SolutionHeads):
    def forward(self, x):
        fine, coarse = super().forward(x)
        return {"fine": fine, "coarse": coarse}


class NotAModule:
    def __init__(self, backbone, num_fine, num_coarse):
        self.backbone = backbone


class Crashing(SolutionHeads):
    def forward(self, x):
        features = self.backbone(x)
        return self.fine_head(features), self.coarse_haed(features)  # a typo


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (CopiedBackbone, "two_backbones"),
        (BackbonePerHead, "two_backbones"),
        (NewBackbone, "two_backbones"),
        (Swapped, "heads_swapped"),
        (EuroSATSizes, "wrong_head_size"),
        (Softmaxed, "softmax_in_forward"),
        (CoarseSoftmaxed, "softmax_in_forward"),
        (FrozenInside, "backbone_frozen"),
        (FrozenInForward, "backbone_frozen"),
        (NoGradFeatures, "backbone_frozen"),
        (CoarseDetached, "coarse_detached"),
        (FineDetached, "fine_detached"),
        (Stacked, "coarse_from_fine_logits"),
        (StackedOnProbabilities, "coarse_from_fine_logits"),
        (FineOnCoarse, "fine_from_coarse_logits"),
        (HardcodedFeatures, "wrong_in_features"),
        (HeadsInAList, "heads_not_registered"),
        (HeadsInForward, "heads_created_in_forward"),
        (Concatenated, "not_a_pair"),
        (AsDict, "not_a_pair"),
        (NotAModule, "not_a_module"),
        (SolutionHeads(FakeBackbone(), NUM_FINE, NUM_COARSE), "not_a_class"),
        (lambda backbone, a, b: SolutionHeads(backbone, a, b), "not_a_class"),
        (Crashing, "crash"),
    ],
)
def test_two_heads_mistakes_have_their_own_name(answer, mistake):
    result = run_check("two_heads", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_two_heads_messages_say_what_and_how():
    swapped = run_check("two_heads", Swapped).feedback
    assert "(fine_logits, coarse_logits)" in swapped
    sizes = run_check("two_heads", EuroSATSizes).feedback
    assert "num_fine" in sizes and "10 and 3" in sizes
    features = run_check("two_heads", HardcodedFeatures).feedback
    assert "num_features" in features and "1280" in features
    stacked = run_check("two_heads", Stacked).feedback
    assert "fine logits" in stacked and "side by side" in stacked
    crash = run_check("two_heads", Crashing).feedback
    assert "coarse_haed" in crash and "AttributeError" in crash


def test_two_heads_not_done_and_the_fake_backbone():
    class Stub(nn.Module):
        def __init__(self, backbone, num_fine, num_coarse):
            super().__init__()
            raise NotImplementedError("Your code here")

    assert run_check("two_heads", Stub).mistake == "not_done"
    backbone = FakeBackbone()
    x = torch.randn(3, 3, 6, 6)
    assert backbone(x).shape == (3, NUM_FEATURES) and backbone.num_features == NUM_FEATURES
    assert torch.equal(backbone.forward_head(backbone.forward_features(x), pre_logits=True), backbone(x))
    with torch.no_grad():  # the conv's bias shifts the pooled features one for one
        shifted = backbone(x) + 1.0
        backbone.conv_stem.bias += 1.0
        assert torch.allclose(backbone(x), shifted, atol=1e-6)
    backbone.reset_classifier(5)
    assert backbone(x).shape == (3, 5)


def test_two_heads_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state().clone()
    run_check("two_heads", SolutionHeads)
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------- multitask_loss


def solution_loss(fine_logits, y_fine, coarse_logits, y_coarse, weight):
    return F.cross_entropy(fine_logits, y_fine) + weight * F.cross_entropy(coarse_logits, y_coarse)


def module_loss(fine_logits, y_fine, coarse_logits, y_coarse, weight):  # another correct way: the loss module
    criterion = nn.CrossEntropyLoss()
    return criterion(fine_logits, y_fine) + criterion(coarse_logits, y_coarse) * weight


def nll_loss(fine_logits, y_fine, coarse_logits, y_coarse, weight):  # another correct way: log-softmax + NLL
    fine = F.nll_loss(F.log_softmax(fine_logits, dim=1), y_fine)
    return fine + weight * F.nll_loss(torch.log_softmax(coarse_logits, -1), y_coarse)


def manual_loss(fine_logits, y_fine, coarse_logits, y_coarse, weight):  # another correct way: by hand
    def ce(logits, y):
        return -(logits.log_softmax(1).gather(1, y[:, None])).mean()

    return torch.stack([ce(fine_logits, y_fine), weight * ce(coarse_logits, y_coarse)]).sum()


@pytest.mark.parametrize("answer", [solution_loss, module_loss, nll_loss, manual_loss])
def test_multitask_loss_correct_answers_pass(answer):
    result = run_check("multitask_loss", answer)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (lambda f, yf, c, yc, w: F.cross_entropy(f, yf) + F.cross_entropy(c, yc), "weight_ignored"),
        (lambda f, yf, c, yc, w: w * F.cross_entropy(f, yf) + F.cross_entropy(c, yc), "weight_on_fine"),
        (lambda f, yf, c, yc, w: (1 - w) * F.cross_entropy(f, yf) + w * F.cross_entropy(c, yc), "weighted_average"),
        (lambda f, yf, c, yc, w: F.cross_entropy(f, yf), "only_fine"),
        (lambda f, yf, c, yc, w: w * F.cross_entropy(c, yc), "only_coarse"),
        (lambda f, yf, c, yc, w: F.cross_entropy(f, yc) + w * F.cross_entropy(c, yf), "labels_swapped"),
        (
            lambda f, yf, c, yc, w: F.cross_entropy(f.softmax(1), yf) + w * F.cross_entropy(c.softmax(1), yc),
            "softmax_before_ce",
        ),
        (lambda f, yf, c, yc, w: F.cross_entropy(f, yf) + w * F.cross_entropy(c.softmax(1), yc), "softmax_before_ce"),
        (
            lambda f, yf, c, yc, w: (
                F.cross_entropy(f, yf, reduction="sum") + w * F.cross_entropy(c, yc, reduction="sum")
            ),
            "summed_not_mean",
        ),
        (lambda f, yf, c, yc, w: F.nll_loss(f, yf) + w * F.nll_loss(c, yc), "nll_without_log_softmax"),
        (lambda f, yf, c, yc, w: F.nll_loss(f.log_softmax(1), yf) + w * F.nll_loss(c, yc), "nll_without_log_softmax"),
        (lambda f, yf, c, yc, w: solution_loss(f, yf, c, yc, w).item(), "loss_not_a_tensor"),
        (lambda f, yf, c, yc, w: torch.tensor(solution_loss(f, yf, c, yc, w).item()), "loss_detached"),
        (
            lambda f, yf, c, yc, w: (
                F.cross_entropy(f, yf, reduction="none") + w * F.cross_entropy(c, yc, reduction="none")
            ),
            "not_a_scalar",
        ),
        (lambda f, yf, c, yc, w: 2 * solution_loss(f, yf, c, yc, w), "wrong_value"),
        ([1.0], "not_a_function"),
    ],
)
def test_multitask_loss_mistakes_have_their_own_name(answer, mistake):
    result = run_check("multitask_loss", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_multitask_loss_inputs_modified_and_batches_of_different_sizes():
    def centred_in_place(fine_logits, y_fine, coarse_logits, y_coarse, weight):
        fine_logits.data -= fine_logits.data.mean(1, keepdim=True)  # cross-entropy does not change, the input does
        return solution_loss(fine_logits, y_fine, coarse_logits, y_coarse, weight)

    result = run_check("multitask_loss", centred_in_place)
    assert not result.passed and result.mistake == "inputs_modified"

    def per_image_then_mean(fine_logits, y_fine, coarse_logits, y_coarse, weight):  # one batch size assumed
        per_image = F.cross_entropy(fine_logits, y_fine, reduction="none")
        return (per_image + weight * F.cross_entropy(coarse_logits, y_coarse, reduction="none")).mean()

    result = run_check("multitask_loss", per_image_then_mean)
    assert not result.passed and result.mistake == "crash"
    assert "different images" in result.feedback and "4 and 7" in result.feedback


@pytest.mark.parametrize("name", list(loss_cases()))
def test_every_wrong_formula_gives_its_own_number(name):
    variants = loss_variants(*loss_cases()[name])
    for (m1, v1), (m2, v2) in itertools.combinations(variants, 2):
        if m1 != m2:
            assert abs(v1 - v2) > 0.03, (m1, v1, m2, v2)
    assert variants[0][0] is None
    assert abs(variants[0][1] - float(solution_loss(*loss_cases()[name]))) < 1e-6
    names = {m for m, _ in variants}
    if name == "same_batch":  # every named mistake is seen in the first case
        assert names >= {"labels_swapped", "softmax_before_ce", "summed_not_mean", "nll_without_log_softmax"}


# ----------------------------------------------------------------------------- choose_source


def solution_choice(results, costs):
    order = sorted(results, key=costs.get)
    chosen = order[0]
    for name in order[1:]:
        if min(results[name]) > max(results[chosen]):
            chosen = name
    return chosen


def numpy_choice(results, costs):  # another correct way: NumPy arrays, a while loop over sorted (cost, name)
    ranked = sorted((cost, name) for name, cost in costs.items() if name in results)
    chosen, i = ranked[0][1], 1
    while i < len(ranked):
        name = ranked[i][1]
        if np.min(np.asarray(results[name])) > np.max(np.asarray(results[chosen])):
            chosen = name
        i += 1
    return chosen


def reduce_choice(results, costs):  # another correct way: functools.reduce over the names by cost
    def step(current, name):
        return name if sorted(results[name])[0] > sorted(results[current])[-1] else current

    names = sorted(costs, key=lambda n: costs[n])
    return functools.reduce(step, names[1:], names[0])


@pytest.mark.parametrize("answer", [solution_choice, numpy_choice, reduce_choice, reference_choice])
def test_choose_source_correct_answers_pass(answer):
    result = run_check("choose_source", answer)
    assert result.passed, result.feedback


def largest_model(results, costs):
    return max(costs, key=costs.get)


def best_mean(results, costs):
    return max(results, key=lambda n: sum(results[n]) / len(results[n]))


def mean_in_cost_order(results, costs):
    chosen = None
    for name in sorted(results, key=costs.get):
        if chosen is None or statistics.mean(results[name]) > statistics.mean(results[chosen]):
            chosen = name
    return chosen


def never_switches(results, costs):
    return sorted(results, key=costs.get)[0]


def dict_order(results, costs):
    names = list(results)
    chosen = names[0]
    for name in names[1:]:
        if min(results[name]) > max(results[chosen]):
            chosen = name
    return chosen


def sorted_names(results, costs):  # sorts the names, not the costs
    names = sorted(costs)
    chosen = names[0]
    for name in names[1:]:
        if min(results[name]) > max(results[chosen]):
            chosen = name
    return chosen


def against_cheapest(results, costs):
    order = sorted(results, key=costs.get)
    chosen = order[0]
    for name in order[1:]:
        if min(results[name]) > max(results[order[0]]):
            chosen = name
    return chosen


def first_switch(results, costs):
    order = sorted(results, key=costs.get)
    for name in order[1:]:
        if min(results[name]) > max(results[order[0]]):
            return name
    return order[0]


def every_seed(results, costs):
    order = sorted(results, key=costs.get)
    chosen = order[0]
    for name in order[1:]:
        if all(np.greater(results[name], results[chosen])):
            chosen = name
    return chosen


def best_seeds(results, costs):
    order = sorted(results, key=costs.get)
    chosen = order[0]
    for name in order[1:]:
        if max(results[name]) > max(results[chosen]):
            chosen = name
    return chosen


def worst_seeds(results, costs):
    order = sorted(results, key=costs.get)
    chosen = order[0]
    for name in order[1:]:
        if min(results[name]) > min(results[chosen]):
            chosen = name
    return chosen


def smallest_spread(results, costs):
    return min(results, key=lambda n: max(results[n]) - min(results[n]) + costs[n] / 100)


def sorts_in_place(results, costs):
    for accuracies in results.values():
        accuracies.sort()
    order = sorted(results, key=costs.get)
    chosen = order[0]
    for name in order[1:]:
        if results[name][0] > results[chosen][-1]:
            chosen = name
    return chosen


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (largest_model, "largest_model"),
        (best_mean, "highest_mean"),
        (mean_in_cost_order, "highest_mean"),
        (never_switches, "cheapest_always"),
        (dict_order, "ignores_cost_order"),
        (sorted_names, "ignores_cost_order"),
        (against_cheapest, "compares_to_cheapest_only"),
        (first_switch, "stops_at_first_switch"),
        (every_seed, "paired_by_seed"),
        (best_seeds, "wrong_seeds_compared"),
        (worst_seeds, "wrong_seeds_compared"),
        (smallest_spread, "wrong_choice"),
        (sorts_in_place, "inputs_modified"),
        (lambda results, costs: solution_choice(results, costs).upper(), "unknown_name"),
        (lambda results, costs: (solution_choice(results, costs), 0.8), "wrong_type"),
        (lambda results, costs: results[solution_choice(results, costs)], "wrong_type"),
        (lambda results, costs: sorted(results, key=costs.get)[3], "crash"),
        ("lite0", "not_a_function"),
    ],
)
def test_choose_source_mistakes_have_their_own_name(answer, mistake):
    result = run_check("choose_source", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_choose_source_messages_show_a_case():
    feedback = run_check("choose_source", best_mean).feedback
    assert "spread" in feedback and "For example, with lite0 (0.39 GFLOPs): 70, 78, 74 %" in feedback
    feedback = run_check("choose_source", against_cheapest).feedback
    assert "current choice" in feedback and "'lite2'" in feedback


def _comparisons(results, costs):
    """(new model's worst seed, current choice's best seed) of every comparison the rule makes."""
    order = sorted(results, key=costs.get)
    chosen, out = order[0], []
    for name in order[1:]:
        out.append((min(results[name]), max(results[chosen])))
        if min(results[name]) > max(results[chosen]):
            chosen = name
    return out


@pytest.mark.parametrize("name", list(source_cases()))
def test_source_cases_are_far_from_ties(name):
    results, costs = source_cases()[name]
    assert set(results) == set(costs) and len({len(v) for v in results.values()}) == 1
    assert len(set(costs.values())) == len(costs)
    for worst, best in _comparisons(results, costs):
        assert abs(worst - best) >= 0.02 - 1e-9, (worst, best)


def test_every_wrong_rule_has_its_own_choices():
    cases = source_cases()
    right = tuple(reference_choice(*case) for case in cases.values())
    seen: dict[tuple[str, ...], str] = {}
    for mistake, rules in SOURCE_RULES.items():
        for rule in rules:
            choices = tuple(rule(*case) for case in cases.values())
            assert choices != right, rule.__name__
            assert seen.setdefault(choices, mistake) == mistake, (rule.__name__, seen[choices])


# ----------------------------------------------------------------------------- the notebooks


def test_released_notebook_holds_no_answer():
    solution = nbformat.read(REPO / "solutions" / f"{STEM}.ipynb", as_version=4)
    released = nbformat.read(REPO / "exercises" / f"{STEM}.ipynb", as_version=4)
    code = "\n".join(c.source for c in released.cells if c.cell_type == "code")
    for word in ("self.fine_head =", "self.coarse_head(", "F.cross_entropy(fine_logits", "min(results[name])"):
        assert word not in code, word
    text = json.dumps([c.source for c in released.cells])
    assert "BEGIN SOLUTION" not in text
    stubs = [c.source for c in released.cells if c.cell_type == "code" and "NotImplementedError" in c.source]
    assert len(stubs) == 3 and all("hint(" in s for s in stubs)
    assert exercises.render(exercises.make_exercise(solution, STEM)) == (
        REPO / "exercises" / f"{STEM}.ipynb"
    ).read_text(encoding="utf-8")
