"""Checks of "fine-tuning a language model on equal terms" (exercises 11): the search task that measures what
fine-tuning forgets, the paired comparison of two models on the same items, and the rule that picks the
learning rate on dev within a limit on forgetting.

``search_hits`` runs the learner's function on 8 query vectors and 8 sentence vectors of 4 dimensions
(:func:`search_case`), made so that every wrong recipe of :data:`HIT_RULES` finds a different set of queries
than cosine similarity does, and a different set from every wrong recipe of another name: the sentences'
lengths differ widely (sentence 6's is about 9 and sentence 3's about 5, five of the others' between 0.8 and
2.1, so those two win every query of a plain dot product), and the first coordinate is larger than the others
(so normalising each coordinate over the rows, instead of each row, changes the answer). In every recipe the best
sentence of each query is clear of the second best (``tests/test_exercise_11.py``).

``paired_difference`` runs the learner's bootstrap on two cases of 1,000 items (:func:`paired_cases`) with
several seeds and compares the averaged interval with what a paired bootstrap of 2,000 rounds gives on average
(:func:`reference_interval`). The tolerances were measured on those cases with NumPy bootstraps
(``default_rng`` and ``RandomState``) over groups of consecutive seeds (120 groups of the five seeds the check
uses on the first case, 200 groups of three on the second): a right interval's width, averaged over its group,
came out between 0.95 and 1.04 times the reference, a 90 % interval's between 0.81 and 0.87 times; resampling A
and B separately makes it more than twice as wide. Widths from 0.91 to 1.10 times pass.

``choose_rate`` runs the learner's rule on synthetic results of three learning rates (:func:`rate_cases`), and
names a wrong answer by the wrong rule of :data:`RATE_RULES` that gives the same answer in every case.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tl_helpers.checks.core import CheckResult, fail, learner_error, ok, register
from tl_helpers.checks.registry import exercise

__all__ = [
    "BOOT_SEEDS",
    "HIT_RULES",
    "RATE_RULES",
    "paired_cases",
    "rate_cases",
    "reference_choice",
    "reference_hits",
    "reference_interval",
    "search_case",
]

# ----------------------------------------------------------------------------- search_hits


def search_case() -> tuple[torch.Tensor, torch.Tensor]:
    """``(query_vecs, doc_vecs)``: 8 x 4 each, float32 like ``text.embed``'s output; row i of each belong together.

    Sentence 6's vector is about 9 long and sentence 3's about 5, five of the other six between 0.8 and 2.1; the
    first coordinate is the largest.
    By cosine similarity, queries 0, 1, 3, 4 and 7 find their own sentence first.
    """
    queries = [
        [-3.4, -0.3, -0.5, 0.0],
        [-4.6, 1.2, 0.7, 0.1],
        [2.2, -1.3, -0.2, 0.1],
        [6.0, -1.5, -0.0, 0.1],
        [-0.3, -0.6, -1.9, 0.3],
        [2.3, 0.3, 0.6, -0.1],
        [1.8, 0.3, 0.1, 1.2],
        [4.2, 0.3, 0.3, 0.3],
    ]
    docs = [
        [-1.1, -0.2, -0.1, 0.1],
        [-3.1, 1.3, -0.1, 0.0],
        [-0.8, -0.4, -0.2, 0.0],
        [4.7, -1.4, 0.3, 0.3],
        [-1.2, -0.3, -0.9, 0.1],
        [0.5, 0.1, 0.6, -0.2],
        [-8.6, 1.5, -0.3, 2.7],
        [2.0, 0.1, 0.3, 0.4],
    ]
    return torch.tensor(queries, dtype=torch.float32), torch.tensor(docs, dtype=torch.float32)


def _cosine(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return F.normalize(q, dim=1) @ F.normalize(d, dim=1).T


def _own_first(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Whether item i's best match along ``dim`` is item i (scores: queries x sentences)."""
    return scores.argmax(dim) == torch.arange(len(scores))


def reference_hits(query_vecs: torch.Tensor, doc_vecs: torch.Tensor) -> torch.Tensor:
    """For each query: is its own sentence the most cosine-similar of all?"""
    return _own_first(_cosine(query_vecs.double(), doc_vecs.double()))


def _rows(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    return x if dim is None else F.normalize(x, dim=dim)


HitRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A wrong way to search: ``rule(q, d)`` -> one boolean per query (rows of q), its own sentence first or not."""

HIT_RULES: dict[str, list[HitRule]] = {
    # only the queries normalised ranks the sentences of each query exactly as a plain dot product does
    "sentences_not_normalised": [
        lambda q, d: _own_first(q @ d.T),
        lambda q, d: _own_first(F.normalize(q, dim=1) @ d.T),
    ],
    "normalised_wrong_dim": [
        lambda q, d, a=a, b=b: _own_first(_rows(q, a) @ _rows(d, b).T)
        for a, b in ((None, 0), (0, None), (0, 0), (0, 1), (1, 0))
    ],
    "argmax_over_queries": [lambda q, d: _own_first(_cosine(q, d), dim=0)],
    "euclidean_unnormalised": [lambda q, d: _own_first(-torch.cdist(q, d))],
    "wrong_target": [lambda q, d: _cosine(q, d).argmax(1) == 0],
}
"""Mistake -> the wrong recipes that make it (each gives N hits): an answer equal to one of them gets its name."""

_HIT_FEEDBACK = {
    "sentences_not_normalised": "The sentence vectors are not normalised: a plain dot product (or one with only the "
    "queries normalised, which ranks the sentences of a query the same way) grows with a sentence vector's length, "
    "so long vectors win whatever they say: in the check's vectors, the two longest sentence vectors (6, about 9 "
    "long, and 3, about 5; most others are 1 to 2) come first for every query. Cosine similarity divides by both "
    "lengths: normalise "
    "every row of both matrices (F.normalize(x, dim=1)), then take the dot products. Dividing by the norm of the "
    "whole matrix is one number for all rows and changes nothing.",
    "normalised_wrong_dim": "You normalise over the wrong dimension: each vector is a ROW (N x D), so its length is "
    "the norm along dim=1 (axis=1 in NumPy). Normalising along dim=0 rescales each coordinate across the N "
    "vectors, which changes the directions and so the ranking. Use F.normalize(x, dim=1), or x / x.norm(dim=1, "
    "keepdim=True), for both the queries and the sentences.",
    "argmax_over_queries": "You take the argmax over the wrong axis: for each SENTENCE you find the most similar "
    "query. The question is per query: in the N x N matrix of similarities (row i = query i), take the argmax of "
    "each row (dim=1, axis=1) and compare it with the row's own index.",
    "euclidean_unnormalised": "You rank by Euclidean distance between the raw vectors: that mixes length with "
    "direction, so a sentence vector of about the query's length can be nearer than one pointing its way. Cosine "
    "similarity compares directions only (on normalised vectors, the nearest by Euclidean distance is the most "
    "cosine-similar).",
    "wrong_target": "You compare each query's best sentence with sentence 0 (argmax == 0) instead of with its own "
    "sentence: query i belongs with row i of doc_vecs, so compare the argmax of row i with i "
    "(torch.arange(N) gives 0, 1, ..., N-1).",
}


def _to_array(out: Any) -> np.ndarray | None:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    try:
        arr = np.asarray(out)
    except Exception:
        return None
    return None if arr.dtype == object else arr


def _pattern(hits: Any) -> str:
    return ", ".join(str(i) for i, h in enumerate(np.asarray(hits, dtype=bool)) if h) or "none"


def _call_search(search_hits: Callable[..., Any], q: torch.Tensor, d: torch.Tensor) -> tuple[Any, Any, Any]:
    """Call with torch tensors (as the notebook does); a function written for NumPy arrays gets those instead."""
    try:
        return search_hits(q, d), q, d
    except NotImplementedError:
        raise
    except Exception as exc:
        first = exc
    qn, dn = q.numpy().copy(), d.numpy().copy()
    try:
        return search_hits(qn, dn), qn, dn
    except NotImplementedError:
        raise
    except Exception:
        raise first from None


@register("search_hits", 3, "per query: is its own sentence the most cosine-similar of all N?")
def _check_search_hits(search_hits: Any) -> CheckResult:
    if not callable(search_hits):
        return fail("Pass your function search_hits itself (no parentheses), not its result.", mistake="not_a_function")
    q, d = search_case()
    n = len(q)
    try:
        out, given_q, given_d = _call_search(search_hits, q.clone(), d.clone())
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "search_hits")
    if not (np.array_equal(np.asarray(given_q), q.numpy()) and np.array_equal(np.asarray(given_d), d.numpy())):
        return fail(
            "search_hits changed the vectors it was given (an in-place division such as q /= q.norm(...), or "
            "normalize_ on the caller's tensor): the caller's embeddings are changed too. Compute normalised "
            "copies instead (F.normalize returns a new tensor).",
            mistake="inputs_modified",
        )
    arr = _to_array(out)
    expected = reference_hits(q, d).numpy()
    if arr is None:
        return fail(
            f"search_hits should return N booleans (a tensor, an array or a list); got {type(out).__name__}.",
            mistake="wrong_type",
        )
    if arr.ndim == 0 or arr.size == 1:
        return fail(
            f"search_hits returned one number ({float(arr.reshape(-1)[0]):.3g}) for {n} queries: the share found, "
            "or a count. Return one result per query (True where its own sentence comes first); the caller takes "
            ".mean() for the share, and the paired comparison of exercise 2 needs the per-query results.",
            mistake="returned_accuracy",
        )
    if arr.shape == (n, n):
        return fail(
            f"search_hits returned an {n} x {n} matrix (the similarities?): return one boolean per query, whether "
            "the argmax of its row is its own index.",
            mistake="wrong_shape",
        )
    if arr.shape != (n,):
        return fail(
            f"For {n} queries search_hits should return {n} booleans, shape ({n},); got shape {tuple(arr.shape)}.",
            mistake="wrong_shape",
        )
    if arr.dtype != bool:
        numeric = np.issubdtype(arr.dtype, np.number)
        if numeric and np.array_equal(arr, _cosine(q, d).argmax(1).numpy()):
            return fail(
                "search_hits returned, for each query, the index of its most similar sentence: compare it with the "
                "query's own index (argmax == torch.arange(N)) and return those booleans.",
                mistake="returned_indices",
            )
        if not (numeric and np.isin(arr, (0, 1)).all()):
            return fail(
                f"search_hits should return booleans (or 0 and 1), one per query; got values such as "
                f"{', '.join(f'{x:.3g}' for x in arr[:3].astype(float)) if numeric else arr[:3]}.",
                mistake="not_booleans",
            )
    hits = arr.astype(bool)
    if np.array_equal(hits, expected):
        return ok(
            f"Normalises every query and sentence vector to length 1, then finds each query's most similar sentence "
            f"along its row: on the check's vectors (sentence 6 about 9 long, most others 1 to 2) queries "
            f"{_pattern(expected)} find their own sentence first, as cosine similarity says."
        )
    told = f" On the check's vectors, cosine similarity finds queries {_pattern(expected)}; yours: {_pattern(hits)}."
    qd, dd = q.double(), d.double()
    for mistake, rules in HIT_RULES.items():
        if any(np.array_equal(hits, rule(qd, dd).numpy()) for rule in rules):
            return fail(_HIT_FEEDBACK[mistake] + told, mistake=mistake)
    if not hits.any() or hits.all():
        everything = "no query" if not hits.any() else "every query"
        return fail(
            f"Your function says {everything} finds its own sentence first on the check's vectors, where cosine "
            "similarity says some do and some do not: compare the argmax of each query's row with its own index."
            + told,
            mistake="wrong_hits",
        )
    return fail(
        "Not cosine similarity yet: normalise each row of both matrices to length 1, take every query-sentence dot "
        "product (an N x N matrix, one row per query), and compare the argmax of row i with i." + told,
        mistake="wrong_hits",
    )


# ----------------------------------------------------------------------------- paired_difference

BOOT_SEEDS = (0, 1, 2, 3, 4)
"""The seeds the check calls the learner's bootstrap with on the first case (its widths are averaged)."""
_WIDTH_OK = (0.91, 1.10)
_WIDTH_90 = (0.75, 0.91)
_WIDTH_SE = (0.44, 0.58)
_UNPAIRED = 1.5
_ENDS_OK = 0.15
_DIFF_OK = 0.15


def _pairs(n: int, both: int, only_a: int, only_b: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:both] = b[:both] = True
    a[both : both + only_a] = True
    b[both + only_a : both + only_a + only_b] = True
    order = np.random.default_rng(11).permutation(n)
    return a[order], b[order]


def paired_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The cases ``paired_difference`` is run on: name -> (A right per item, B right per item), booleans.

    ``correlated``: 1,000 items, both right on 760, only A on 60, only B on 10: A 82 %, B 77 %, +5 points, a
    paired 95 % interval of about +3.4 to +6.6 points, while resampling A and B separately gives one more than
    twice as wide. ``negative``: 1,000 items, both right on 700, only A on 20, only B on 28: -0.8 points, the
    interval about -2.2 to +0.5 (three times narrower than an unpaired one).
    """
    return {"correlated": _pairs(1000, 760, 60, 10), "negative": _pairs(1000, 700, 20, 28)}


def reference_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``(diff, low, high)`` in points: A - B, and the ends a paired bootstrap of 2,000 rounds gives on average.

    Resampling n items with replacement draws the items where only A is right, only B is right, and the rest in
    multinomial numbers, so a round is one multinomial draw. The ends are the 2.5th and 97.5th percentiles of
    2,000 rounds (NumPy's default, linear interpolation), averaged over 100 such bootstraps (fixed seed): what a
    learner's bootstrap gives up to its own noise, the steps of 1/n included.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(a)
    up, down = int((a & ~b).sum()), int((~a & b).sum())
    draws = np.random.default_rng(20261206).multinomial(n, [up / n, down / n, (n - up - down) / n], size=(100, 2000))
    low, high = np.percentile((draws[..., 0] - draws[..., 1]) / n, [2.5, 97.5], axis=1).mean(axis=1)
    return 100 * (up - down) / n, 100 * float(low), 100 * float(high)


def _unpaired_normal(a: np.ndarray, b: np.ndarray) -> float:
    """Width (points) of the normal 95 % interval built from the two accuracies' own standard errors."""
    n = len(a)
    pa, pb = a.mean(), b.mean()
    return float(2 * 1.96 * 100 * math.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n))


def _triple(out: Any) -> tuple[float, float, float] | None:
    if isinstance(out, (dict, str, bytes)):
        return None
    try:
        values = [float(x) for x in out]
    except Exception:
        return None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        return None
    return values[0], values[1], values[2]


def _points(x: float) -> str:
    return f"{x:+.2f}"


class _LearnerError(Exception):
    def __init__(self, result: CheckResult) -> None:
        self.result = result


def _call_paired(paired_difference: Callable[..., Any], a: np.ndarray, b: np.ndarray, seed: int, scramble: int):
    """The learner's ``(diff, low, high)``. NumPy's, Python's and torch's global generators start the call seeded
    with ``scramble`` (another for every call; restored afterwards), so that a bootstrap that ignores ``seed``
    differs between calls."""
    given_a, given_b = a.copy(), b.copy()
    state_np, state_py = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            np.random.seed(scramble)
            random.seed(scramble)
            torch.manual_seed(scramble)
            out = paired_difference(given_a, given_b, seed=seed)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise _LearnerError(learner_error(exc, "paired_difference")) from None
    finally:
        np.random.set_state(state_np)
        random.setstate(state_py)
    if not (np.array_equal(given_a, a) and np.array_equal(given_b, b)):
        raise _LearnerError(
            fail(
                "paired_difference changed the arrays it was given (shuffled or sorted in place, or overwritten): "
                "A's and B's results pair up item by item, and the caller still needs them. Draw indices and read "
                "a[idx], b[idx] instead.",
                mistake="inputs_modified",
            )
        )
    values = _triple(out)
    if values is None:
        raise _LearnerError(
            fail(
                f"paired_difference should return three numbers, (diff, low, high) in points; got "
                f"{type(out).__name__}: {str(out)[:80]}.",
                mistake="wrong_type",
            )
        )
    return values


def _diagnose_interval(
    name: str, runs: list[tuple[float, float, float]], a: np.ndarray, b: np.ndarray
) -> CheckResult | None:
    """What is wrong with the learner's results on one case (None: right), from one run per seed."""
    ref_diff, ref_low, ref_high = reference_interval(a, b)
    width = ref_high - ref_low
    diff = float(np.mean([r[0] for r in runs]))
    low = float(np.mean([r[1] for r in runs]))
    high = float(np.mean([r[2] for r in runs]))
    case = (
        f" (the check's {name!r} case: {len(a):,} items, A right on {int(a.sum())}, B on {int(b.sum())}, both on "
        f"{int((a & b).sum())}: A - B = {ref_diff:+.1f} points, the paired bootstrap's 95 % interval "
        f"{ref_low:+.1f} to {ref_high:+.1f}; yours: {_points(runs[0][0])}, {_points(runs[0][1])} to "
        f"{_points(runs[0][2])})"
    )
    if abs(diff - ref_diff) > _DIFF_OK:
        if abs(100 * diff - ref_diff) <= _DIFF_OK and abs(diff) < 1:
            return fail(
                "Your numbers are fractions (0.05), not points: multiply the difference and both ends by 100, so "
                "that 0.05 reads as 5 points." + case,
                mistake="fractions",
            )
        if abs(diff + ref_diff) <= _DIFF_OK:
            return fail(
                "Your difference has the wrong sign: it is B - A. Return accuracy of A minus accuracy of B (the "
                "first argument minus the second), so that a positive number means A is better." + case,
                mistake="reversed",
            )
        if any(abs(r - ref_diff) <= _DIFF_OK for r in runs[0][1:]):
            return fail(
                "The three numbers come in the wrong order: return (diff, low, high), the difference first, then "
                "the lower and the upper end of the interval." + case,
                mistake="wrong_order",
            )
        return fail(
            f"The difference should be 100 x (accuracy of A - accuracy of B) on all the items: {ref_diff:+.1f} "
            f"points here; yours is {diff:+.2f}." + case,
            mistake="wrong_difference",
        )
    if max(r[2] - r[1] for r in runs) < 1e-9:
        return fail(
            "Your interval has zero width (low = high): every round sees the same items, because nothing is "
            "resampled or the items are drawn without replacement (a permutation of all n items has the same "
            "mean). In each of the 2,000 rounds draw n item indices WITH replacement (rng.integers(0, n, size=n)) "
            "and take the difference of the accuracies on those items." + case,
            mistake="no_resampling",
        )
    if low > high:
        return fail(
            "The lower end is above the upper end: return (diff, low, high) with low the 2.5th and high the 97.5th "
            "percentile." + case,
            mistake="wrong_order",
        )
    ratio = (high - low) / width
    deterministic = all(np.allclose(r, runs[0], rtol=0, atol=1e-9) for r in runs)
    if ratio >= _UNPAIRED:
        if deterministic and abs((high - low) / _unpaired_normal(a, b) - 1) < 0.03:
            return fail(
                f"Your interval is {ratio:.1f} times as wide as the paired bootstrap's: a normal approximation from "
                "the two accuracies' own standard errors, sqrt(pa(1-pa)/n + pb(1-pb)/n), treats A and B as "
                "measured on different items. They were measured on the SAME items and are right on mostly the "
                "same ones, so their difference varies far less than that. Resample the items and compute the "
                "difference on each resample." + case,
                mistake="unpaired_normal",
            )
        return fail(
            f"Your interval is {ratio:.1f} times as wide as the paired bootstrap's: A and B are resampled "
            "separately (two sets of indices), as if measured on different items. Pair them: in each round draw "
            "ONE set of item indices and use it for both, a[idx].mean() - b[idx].mean() (or the per-item "
            "difference a - b, resampled)." + case,
            mistake="unpaired_bootstrap",
        )
    if _WIDTH_90[0] <= ratio < _WIDTH_90[1]:
        return fail(
            f"Your interval is {ratio:.2f} times as wide as the 95 % interval: the 5th and 95th percentiles give a "
            "90 % interval. A 95 % interval leaves 2.5 % out on each side: np.percentile(..., [2.5, 97.5])." + case,
            mistake="ninety_percent",
        )
    if _WIDTH_SE[0] <= ratio < _WIDTH_SE[1]:
        return fail(
            f"Your interval is about half as wide as the 95 % interval ({ratio:.2f} times): diff ± one standard "
            "deviation of the bootstrapped differences covers about 68 %. Take the 2.5th and 97.5th percentiles "
            "of the bootstrapped differences." + case,
            mistake="one_standard_error",
        )
    if not _WIDTH_OK[0] <= ratio <= _WIDTH_OK[1]:
        return fail(
            f"Your interval is {ratio:.2f} times as wide as the paired bootstrap's 95 % interval: 2,000 rounds, "
            "each resampling the n items with replacement, the same items for A and B; then the 2.5th and 97.5th "
            "percentiles of the 2,000 differences." + case,
            mistake="wrong_interval",
        )
    if abs(low - ref_low) > _ENDS_OK * width or abs(high - ref_high) > _ENDS_OK * width:
        return fail(
            "Your interval has the right width but sits in the wrong place: the bootstrapped differences centre "
            "on the observed difference, and the interval goes from their 2.5th to their 97.5th percentile." + case,
            mistake="wrong_interval",
        )
    return None


@register("paired_difference", 3, "A - B in points with a paired bootstrap 95 % interval (the same items resampled)")
def _check_paired_difference(paired_difference: Any) -> CheckResult:
    if not callable(paired_difference):
        return fail(
            "Pass your function paired_difference itself (no parentheses), not its result.", mistake="not_a_function"
        )
    cases = paired_cases()
    calls = itertools.count(7919)

    def call(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float, float]:
        return _call_paired(paired_difference, a, b, seed, next(calls))

    try:
        a, b = cases["correlated"]
        first = call(a, b, BOOT_SEEDS[0])
        # twice more with the same seed: two unseeded bootstraps can end on the same steps of 1/n by chance
        repeats = [call(a, b, BOOT_SEEDS[0]) for _ in range(2)]
        again = next((r for r in repeats if not np.allclose(first, r, rtol=0, atol=1e-9)), first)
        if again is not first:
            return fail(
                f"Two calls with the same seed give different intervals ({_points(first[1])} to "
                f"{_points(first[2])}, then {_points(again[1])} to {_points(again[2])}): the seed argument is not "
                "used. Draw the resamples from np.random.default_rng(seed), so that the same call gives the same "
                "numbers.",
                mistake="seed_ignored",
            )
        runs = [first] + [call(a, b, s) for s in BOOT_SEEDS[1:]]
        problem = _diagnose_interval("correlated", runs, a, b)
        if problem is not None:
            return problem
        a, b = cases["negative"]
        runs = [call(a, b, s) for s in BOOT_SEEDS[:3]]
        problem = _diagnose_interval("negative", runs, a, b)
        if problem is not None:
            return problem
    except _LearnerError as error:
        return error.result
    diff, low, high = reference_interval(*cases["correlated"])
    return ok(
        f"A - B in points with a paired 95 % interval: on 1,000 items where A and B are right on mostly the same "
        f"ones, {diff:+.1f} points, {low:+.1f} to {high:+.1f}, less than half as wide as resampling them "
        "separately would make it; the same seed gives the same numbers."
    )


# ----------------------------------------------------------------------------- choose_rate

Results = dict[float, dict[str, float]]
RateRule = Callable[[Results, float, float], "float | None"]


def _best(results: Results, rates: list[float], key: str) -> float | None:
    return max(rates, key=lambda lr: results[lr][key]) if rates else None


def _allowed(results: Results, keep: Callable[[float], bool]) -> list[float]:
    return [lr for lr in results if keep(results[lr]["search"])]


def reference_choice(results: Results, pretrained_search: float, max_drop: float) -> float | None:
    """The stated rule: the best dev accuracy among the rates whose search accuracy is at least
    ``pretrained_search - max_drop``; None when no rate qualifies."""
    return _best(results, _allowed(results, lambda s: s >= pretrained_search - max_drop), "dev")


def _within(pre: float, drop: float) -> Callable[[float], bool]:
    return lambda s: s >= pre - drop


RATE_RULES: dict[str, list[RateRule]] = {
    "chose_on_test": [
        lambda r, pre, drop: _best(r, _allowed(r, _within(pre, drop)), "test"),
        lambda r, pre, drop: _best(r, list(r), "test"),
    ],
    "ignored_search": [lambda r, pre, drop: _best(r, list(r), "dev")],
    "chose_by_search": [
        lambda r, pre, drop: _best(r, _allowed(r, _within(pre, drop)), "search"),
        lambda r, pre, drop: _best(r, list(r), "search"),
    ],
    "constraint_sign": [
        lambda r, pre, drop: _best(r, _allowed(r, lambda s: s <= pre - drop), "dev"),
        lambda r, pre, drop: _best(r, _allowed(r, lambda s: s >= pre + drop), "dev"),
    ],
    "relative_drop": [lambda r, pre, drop: _best(r, _allowed(r, lambda s: s >= pre * (1 - drop)), "dev")],
    "strict_boundary": [lambda r, pre, drop: _best(r, _allowed(r, lambda s: s > pre - drop), "dev")],
    "max_drop_as_points": [lambda r, pre, drop: _best(r, _allowed(r, lambda s: 100 * (pre - s) <= drop), "dev")],
    "max_of_rates": [lambda r, pre, drop: max(_allowed(r, _within(pre, drop)), default=None)],
    "never_none": [lambda r, pre, drop: _best(r, _allowed(r, _within(pre, drop)) or list(r), "dev")],
}
"""Mistake -> the wrong rules that make it: a learner's answers equal to one of them in every case get its name."""


def _entry(dev: float, test: float, search: float) -> dict[str, float]:
    return {"dev": dev, "test": test, "search": search}


def rate_cases() -> dict[str, tuple[Results, float, float]]:
    """The cases ``choose_rate`` is run on: name -> (results by learning rate, pretrained search, max_drop).

    ``forgets_at_high_rate``: the highest rate has the best dev and test accuracy and loses 20 points of search;
    the two others stay within the limit. ``boundary``: the best dev accuracy belongs to a rate whose search
    accuracy is exactly ``max_drop`` below (numbers exact in binary, so ``>=`` holds however it is written).
    ``relative``: a rate within the limit in points but not as a share of the pretrained accuracy has the best
    dev accuracy. ``none_qualify``: every rate forgets more than the limit (the answer is None). ``low_rate_keeps``:
    the lowest rate keeps search intact and has the best dev accuracy of the two within the limit.
    ``best_within``: the best dev accuracy overall belongs to a rate within the limit. The dictionaries list the
    rates in no particular order; every accuracy the rule compares is at least a point from a tie, and every search
    accuracy but the boundary case's at least a point from the limit (``tests/test_exercise_11.py``).
    """
    return {
        "forgets_at_high_rate": (
            {2e-5: _entry(0.86, 0.88, 0.78), 1e-4: _entry(0.89, 0.90, 0.60), 5e-5: _entry(0.88, 0.86, 0.77)},
            0.80,
            0.05,
        ),
        "boundary": (
            {5e-5: _entry(0.86, 0.87, 0.70), 1e-4: _entry(0.875, 0.85, 0.625), 2e-5: _entry(0.84, 0.86, 0.72)},
            0.75,
            0.125,
        ),
        "relative": (
            {1e-4: _entry(0.88, 0.89, 0.20), 2e-5: _entry(0.85, 0.86, 0.45), 5e-5: _entry(0.87, 0.85, 0.35)},
            0.50,
            0.20,
        ),
        "none_qualify": (
            {5e-5: _entry(0.87, 0.86, 0.74), 2e-5: _entry(0.85, 0.87, 0.76), 1e-4: _entry(0.88, 0.88, 0.55)},
            0.80,
            0.02,
        ),
        "low_rate_keeps": (
            {2e-5: _entry(0.87, 0.85, 0.70), 5e-5: _entry(0.86, 0.87, 0.68), 1e-4: _entry(0.88, 0.88, 0.55)},
            0.70,
            0.05,
        ),
        "best_within": (
            {5e-5: _entry(0.87, 0.86, 0.66), 1e-4: _entry(0.86, 0.88, 0.52), 2e-5: _entry(0.85, 0.84, 0.69)},
            0.70,
            0.10,
        ),
    }


def _described(results: Results, pretrained: float, max_drop: float) -> str:
    rows = "; ".join(
        f"{lr:g}: dev {r['dev']:.1%}, test {r['test']:.1%}, search {r['search']:.1%}" for lr, r in results.items()
    )
    return f"pretrained search {pretrained:.1%}, max_drop {max_drop:g}, {rows}"


_RATE_FEEDBACK = {
    "chose_on_test": "You choose by test accuracy. The test set is for the final report: a rate picked because it "
    "scored best on test makes that test score optimistic. Choose on dev, as the probe's C is chosen.",
    "ignored_search": "You take the best dev accuracy over all rates, whatever they cost the search task: drop the "
    "rates whose search accuracy fell more than max_drop below the pretrained encoder's first.",
    "chose_by_search": "You choose by search accuracy. The search limit only rules rates out; among those it keeps, "
    "the rate with the best dev accuracy (the task you fine-tune for) wins.",
    "constraint_sign": "The limit points the wrong way: a rate is kept when its search accuracy is at most max_drop "
    "BELOW the pretrained one, i.e. search >= pretrained_search - max_drop.",
    "relative_drop": "You apply the limit as a share of the pretrained accuracy (search >= pretrained x (1 - "
    "max_drop)). max_drop is a drop in accuracy, a difference of fractions: search >= pretrained_search - max_drop.",
    "strict_boundary": "A rate whose search accuracy is exactly max_drop below the pretrained one is refused: 'at "
    "most max_drop below' includes the boundary, so compare with >=, not >.",
    "max_drop_as_points": "You read max_drop as points (100 x the drop <= max_drop): like the accuracies, it is a "
    "fraction (0.05 means 5 points). Compare search >= pretrained_search - max_drop directly.",
    "max_of_rates": "You return max() of the rates that qualify, which compares the learning rates themselves and "
    "returns the largest. Choose among them by dev accuracy: max(allowed, key=lambda lr: results[lr]['dev']).",
    "never_none": "When no rate keeps the search accuracy within max_drop, you still return a rate: return None "
    "then, so that the caller sees that every rate forgot too much.",
}


@register("choose_rate", 2, "best dev accuracy among the rates that keep search within max_drop, else None")
def _check_choose_rate(choose_rate: Any) -> CheckResult:
    if not callable(choose_rate):
        return fail("Pass your function choose_rate itself (no parentheses), not its result.", mistake="not_a_function")
    cases = rate_cases()
    answers: dict[str, Any] = {}
    for name, (results, pretrained, max_drop) in cases.items():
        given = copy.deepcopy(results)
        try:
            answer = choose_rate(given, pretrained, max_drop)
        except NotImplementedError:
            raise
        except Exception as exc:
            result = learner_error(exc, "choose_rate")
            if name == "none_qualify":
                return fail(
                    f"When no rate qualifies your function raises instead of returning None ({type(exc).__name__}: "
                    f"{exc}); e.g. max() of an empty list. Check for an empty list first and return None. With "
                    f"{_described(results, pretrained, max_drop)}, every rate forgot more than max_drop.",
                    mistake="raises_instead_of_none",
                )
            return result
        if given != results:
            return fail(
                "choose_rate changed the dictionary it was given (an entry removed or changed): the caller still "
                "needs every run's results. Build a new list of the rates that qualify instead.",
                mistake="inputs_modified",
            )
        if answer is not None and answer not in results:
            right = reference_choice(results, pretrained, max_drop)
            values = [] if right is None else list(results[right].values())
            if isinstance(answer, (int, float)) and any(abs(answer - v) < 1e-12 for v in values):
                return fail(
                    f"choose_rate returned {answer!r}, an accuracy: return the learning rate itself (the key of "
                    "results), e.g. 5e-05, not its dev accuracy.",
                    mistake="returned_accuracy",
                )
            rates = ", ".join(f"{lr:g}" for lr in results)
            return fail(
                f"choose_rate should return one of the learning rates it was given ({rates}) or None; got "
                f"{type(answer).__name__}: {str(answer)[:80]}.",
                mistake="not_a_rate",
            )
        answers[name] = answer
    wrong = [name for name, case in cases.items() if answers[name] != reference_choice(*case)]
    if not wrong:
        return ok(
            "Keeps the rates whose search accuracy is at most max_drop below the pretrained encoder's (a drop of "
            "exactly max_drop included), takes the best dev accuracy among them, and returns None when none "
            "qualifies; test accuracy plays no part."
        )
    results, pretrained, max_drop = cases[wrong[0]]
    right = reference_choice(results, pretrained, max_drop)
    example = (
        f" For example, with {_described(results, pretrained, max_drop)}, you return {answers[wrong[0]]!r}; the rule "
        f"gives {right!r}."
    )
    for mistake, rules in RATE_RULES.items():
        for rule in rules:
            if all(answers[name] == rule(*cases[name]) for name in cases):
                return fail(_RATE_FEEDBACK[mistake] + example, mistake=mistake)
    return fail(
        "Not the rule yet: keep the rates with results[lr]['search'] >= pretrained_search - max_drop; return None "
        "if there are none, else the one with the highest results[lr]['dev']." + example,
        mistake="wrong_choice",
    )


# ----------------------------------------------------------------------------- hints (exercises of 11)

exercise(
    "search_hits",
    "Cosine similarity compares directions, not lengths: make every query and every sentence vector length 1, "
    "then a query's most similar sentence is the largest dot product in its row. A query scores a hit when "
    "that sentence is its own, the one in the same row of doc_vecs.",
    "torch.nn.functional.normalize(x, dim=1) makes each row length 1 (x / x.norm(dim=1, keepdim=True) too); "
    "q @ d.T is the N x N matrix of dot products, one row per query; .argmax(dim=1) gives each row's best "
    "column; torch.arange(N) the row numbers.",
    "q = <the queries, each row normalised>\n"
    "d = <the sentences, each row normalised>\n"
    "similarity = q @ d.T  # N x N, row i = query i\n"
    "return <each row's argmax> == <the row numbers>",
)
exercise(
    "paired_difference",
    "A and B were scored on the same items, so resample ITEMS: in each of 2,000 rounds draw n item indices with "
    "replacement and compute A's accuracy minus B's on those same items. The 2.5th and 97.5th percentiles of "
    "the 2,000 differences are the interval; everything times 100, in points.",
    "np.asarray(x, dtype=float) turns booleans into 0/1; np.random.default_rng(seed).integers(0, n, size=(2000, "
    "n)) draws all the rounds' indices at once; diff[idx].mean(axis=1) gives one difference per round; "
    "np.percentile(values, [2.5, 97.5]) both ends.",
    "diff = <A as 0/1> - <B as 0/1>  # per item: +1, 0 or -1\n"
    "idx = <2,000 rows of n indices, drawn with seed>\n"
    "low, high = np.percentile(<diff resampled, mean per row>, [2.5, 97.5])\n"
    "return 100 * diff.mean(), 100 * low, 100 * high",
)
exercise(
    "choose_rate",
    "Two steps: first rule out the rates that forgot too much (search accuracy more than max_drop below the "
    "pretrained encoder's; exactly max_drop is still allowed); then, among the rest, the best DEV accuracy. "
    "Nothing left: None. Test accuracy plays no part.",
    "results.items() gives (rate, its numbers); results[lr]['search'] and results[lr]['dev'] are fractions; "
    "max(rates, key=...) picks by a key instead of the rates themselves.",
    "allowed = [lr for lr, r in results.items() if <r's search is at least pretrained_search - max_drop>]\n"
    "if not allowed:\n"
    "    return None\n"
    "return max(allowed, key=<the dev accuracy of lr>)",
)
