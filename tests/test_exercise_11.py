"""Exercise 11 (fine-tuning a language model on equal terms, and what it forgets): wrong answers written the way
learners write them, each named by its feedback; correct answers written differently from the solution, which
pass. Everything runs on the checks' own small inputs (no encoder, no data set)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tl_helpers import exercises
from tl_helpers.adapt.strategies import paired_interval
from tl_helpers.checks import run_check
from tl_helpers.checks.search import (
    HIT_RULES,
    RATE_RULES,
    paired_cases,
    rate_cases,
    reference_choice,
    reference_hits,
    reference_interval,
    search_case,
)

REPO = Path(__file__).resolve().parents[1]
STEM = "11_language_fine_tuning_on_equal_terms_exercises"

GRADED_VARIANTS = [
    (
        STEM,
        "    d = torch.nn.functional.normalize(torch.as_tensor(doc_vecs), dim=1)",
        "    d = torch.as_tensor(doc_vecs)",
        "search_hits",
        "sentence vectors are not normalised",
    ),
    (
        STEM,
        "    low, high = np.percentile(diff[rounds].mean(axis=1), [2.5, 97.5])",
        "    low, high = np.percentile(diff[rounds].mean(axis=1), [5, 95])",
        "paired_difference",
        "90 % interval",
    ),
    (
        STEM,
        '    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop]',
        '    allowed = [lr for lr, r in results.items() if r["search"] > pretrained_search - max_drop]',
        "choose_rate",
        "includes the boundary",
    ),
    (
        STEM,
        "    return (q @ d.T).argmax(dim=1) == torch.arange(len(d))",
        "    return torch.cdist(q, d).argmin(dim=1) == torch.arange(len(d))",
        "search_hits",
        None,
    ),
]


# ----------------------------------------------------------------------------- search_hits


def solution_hits(query_vecs, doc_vecs):
    q = F.normalize(torch.as_tensor(query_vecs), dim=1)
    d = F.normalize(torch.as_tensor(doc_vecs), dim=1)
    return (q @ d.T).argmax(dim=1) == torch.arange(len(d))


def numpy_hits(query_vecs, doc_vecs):  # another correct way: NumPy, 0/1 integers out
    q, d = np.asarray(query_vecs, dtype=np.float64), np.asarray(doc_vecs, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return (np.argmax(q @ d.T, axis=1) == np.arange(len(d))).astype(int)


def numpy_only_hits(query_vecs, doc_vecs):  # written for NumPy arrays only (.astype fails on a tensor)
    q, d = query_vecs.astype(np.float64), doc_vecs.astype(np.float64)
    scores = (q @ d.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(d, axis=1))
    return scores.argmax(axis=1) == np.arange(len(q))


def sklearn_hits(query_vecs, doc_vecs):  # another correct way: scikit-learn's cosine_similarity, a list out
    from sklearn.metrics.pairwise import cosine_similarity

    scores = cosine_similarity(np.asarray(query_vecs), np.asarray(doc_vecs))
    return [bool(row.argmax() == i) for i, row in enumerate(scores)]


def pairwise_cosine_hits(query_vecs, doc_vecs):  # another correct way: F.cosine_similarity on all pairs
    scores = F.cosine_similarity(query_vecs[:, None, :], doc_vecs[None, :, :], dim=-1)
    return scores.diagonal() >= scores.max(dim=1).values


def only_sentences_normalised(query_vecs, doc_vecs):  # correct: a query's length scales its whole row
    d = doc_vecs / doc_vecs.norm(dim=1, keepdim=True)
    return (query_vecs @ d.T).argmax(1) == torch.arange(len(d))


def euclidean_on_unit_vectors(query_vecs, doc_vecs):  # correct: on unit vectors the nearest is the most similar
    q, d = F.normalize(query_vecs, dim=1), F.normalize(doc_vecs, dim=1)
    return torch.cdist(q, d).argmin(1) == torch.arange(len(d))


def topk_hits(query_vecs, doc_vecs):  # another correct way: the top-1 of each row, compared row by row
    q, d = F.normalize(query_vecs, dim=-1), F.normalize(doc_vecs, dim=-1)
    best = torch.topk(q @ d.T, k=1, dim=1).indices.squeeze(1)
    return torch.tensor([int(b) == i for i, b in enumerate(best)])


@pytest.mark.parametrize(
    "answer",
    [
        solution_hits,
        numpy_hits,
        numpy_only_hits,
        sklearn_hits,
        pairwise_cosine_hits,
        only_sentences_normalised,
        euclidean_on_unit_vectors,
        topk_hits,
    ],
)
def test_search_hits_correct_answers_pass(answer):
    result = run_check("search_hits", answer)
    assert result.passed, result.feedback


def dot_product(query_vecs, doc_vecs):
    return (query_vecs @ doc_vecs.T).argmax(1) == torch.arange(len(doc_vecs))


def only_queries_normalised(query_vecs, doc_vecs):
    q = F.normalize(query_vecs, dim=1)
    return (q @ doc_vecs.T).argmax(1) == torch.arange(len(doc_vecs))


def whole_matrix_norm(query_vecs, doc_vecs):
    q, d = query_vecs / query_vecs.norm(), doc_vecs / doc_vecs.norm()
    return (q @ d.T).argmax(1) == torch.arange(len(d))


def columns_normalised(query_vecs, doc_vecs):
    q, d = F.normalize(query_vecs, dim=0), F.normalize(doc_vecs, dim=0)
    return (q @ d.T).argmax(1) == torch.arange(len(d))


def numpy_axis_0(query_vecs, doc_vecs):
    q = np.asarray(query_vecs) / np.linalg.norm(query_vecs, axis=0)
    d = np.asarray(doc_vecs) / np.linalg.norm(doc_vecs, axis=1, keepdims=True)
    return np.argmax(q @ d.T, axis=1) == np.arange(len(d))


def argmax_over_queries(query_vecs, doc_vecs):
    q, d = F.normalize(query_vecs, dim=1), F.normalize(doc_vecs, dim=1)
    return (q @ d.T).argmax(0) == torch.arange(len(d))


def sentences_first(query_vecs, doc_vecs):  # the matrix the other way round, then argmax of its rows
    q, d = F.normalize(query_vecs, dim=1), F.normalize(doc_vecs, dim=1)
    return (d @ q.T).argmax(1) == torch.arange(len(d))


def euclidean_raw(query_vecs, doc_vecs):
    return torch.cdist(query_vecs, doc_vecs).argmin(1) == torch.arange(len(doc_vecs))


def first_sentence(query_vecs, doc_vecs):
    q, d = F.normalize(query_vecs, dim=1), F.normalize(doc_vecs, dim=1)
    return (q @ d.T).argmax(1) == 0


def share_found(query_vecs, doc_vecs):
    return solution_hits(query_vecs, doc_vecs).float().mean().item()


def share_as_tensor(query_vecs, doc_vecs):
    return solution_hits(query_vecs, doc_vecs).float().mean()


def indices(query_vecs, doc_vecs):
    q, d = F.normalize(query_vecs, dim=1), F.normalize(doc_vecs, dim=1)
    return (q @ d.T).argmax(1)


def similarity_matrix(query_vecs, doc_vecs):
    return F.normalize(query_vecs, dim=1) @ F.normalize(doc_vecs, dim=1).T


def best_scores(query_vecs, doc_vecs):
    return (F.normalize(query_vecs, dim=1) @ F.normalize(doc_vecs, dim=1).T).max(1).values


def in_place(query_vecs, doc_vecs):
    query_vecs /= query_vecs.norm(dim=1, keepdim=True)
    doc_vecs /= doc_vecs.norm(dim=1, keepdim=True)
    return (query_vecs @ doc_vecs.T).argmax(1) == torch.arange(len(doc_vecs))


def without_keepdim(query_vecs, doc_vecs):  # N x D divided by N norms: broadcasting fails for N != D
    q, d = query_vecs / query_vecs.norm(dim=1), doc_vecs / doc_vecs.norm(dim=1)
    return (q @ d.T).argmax(1) == torch.arange(len(d))


def most_dissimilar(query_vecs, doc_vecs):
    q, d = F.normalize(query_vecs, dim=1), F.normalize(doc_vecs, dim=1)
    return (q @ d.T).argmin(1) == torch.arange(len(d))


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (dot_product, "sentences_not_normalised"),
        (only_queries_normalised, "sentences_not_normalised"),
        (whole_matrix_norm, "sentences_not_normalised"),
        (columns_normalised, "normalised_wrong_dim"),
        (numpy_axis_0, "normalised_wrong_dim"),
        (argmax_over_queries, "argmax_over_queries"),
        (sentences_first, "argmax_over_queries"),
        (euclidean_raw, "euclidean_unnormalised"),
        (first_sentence, "wrong_target"),
        (share_found, "returned_accuracy"),
        (share_as_tensor, "returned_accuracy"),
        (indices, "returned_indices"),
        (similarity_matrix, "wrong_shape"),
        (best_scores, "not_booleans"),
        (in_place, "inputs_modified"),
        (without_keepdim, "crash"),
        (most_dissimilar, "wrong_hits"),
        (lambda q, d: torch.zeros(len(q), dtype=torch.bool), "wrong_hits"),
        ("solution_hits(query_vecs, doc_vecs)", "not_a_function"),
    ],
)
def test_search_hits_mistakes_have_their_own_name(answer, mistake):
    result = run_check("search_hits", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_search_hits_messages_say_what_and_how():
    feedback = run_check("search_hits", dot_product).feedback
    assert "long vectors win" in feedback and "F.normalize(x, dim=1)" in feedback
    assert "cosine similarity finds queries 0, 1, 3, 4, 7; yours: 3" in feedback
    assert "dim=1" in run_check("search_hits", columns_normalised).feedback
    assert "per query" in run_check("search_hits", argmax_over_queries).feedback
    crash = run_check("search_hits", without_keepdim).feedback
    assert "RuntimeError" in crash and "query_vecs.norm(dim=1)" in crash
    assert "no query" in run_check("search_hits", lambda q, d: torch.zeros(len(q), dtype=torch.bool)).feedback


def test_search_hits_not_done():
    def stub(query_vecs, doc_vecs):
        raise NotImplementedError("Your code here")

    assert run_check("search_hits", stub).mistake == "not_done"


def test_search_case_is_clear_for_every_recipe():
    q, d = (x.double() for x in search_case())
    # every recipe's best sentence (or best query) is clear of the second best: 2 % of the row's largest score
    matrices = {
        "cosine": F.normalize(q, dim=1) @ F.normalize(d, dim=1).T,
        "dot": q @ d.T,
        "euclidean": -torch.cdist(q, d),
    }
    for a in (None, 0, 1):
        for b in (None, 0, 1):
            qa = q if a is None else F.normalize(q, dim=a)
            db = d if b is None else F.normalize(d, dim=b)
            matrices[f"q{a}d{b}"] = qa @ db.T
    for name, m in matrices.items():
        top2 = m.topk(2, dim=1).values
        gap = (top2[:, 0] - top2[:, 1]) / m.abs().max(dim=1).values
        assert float(gap.min()) >= 0.02, name
    columns = matrices["cosine"].topk(2, dim=0).values
    assert float((columns[0] - columns[1]).min()) >= 0.02
    assert reference_hits(q, d).tolist() == [True, True, False, True, True, False, False, True]
    lengths = d.norm(dim=1)
    assert int(lengths.argmax()) == 6 and 8.5 < float(lengths[6]) < 9.5  # one sentence vector much longer
    assert int(((lengths > 0.8) & (lengths < 2.1)).sum()) == 5  # than most (the feedback says so)
    assert set((q @ d.T).argmax(1).tolist()) == {3, 6}  # the two longest win every query of a dot product
    assert 4.5 < float(lengths[3]) < 5.5 and sorted(lengths.tolist())[-3] < 3.5


def test_every_wrong_search_recipe_has_its_own_hits():
    q, d = (x.double() for x in search_case())
    right = tuple(reference_hits(q, d).tolist())
    seen: dict[tuple[bool, ...], str] = {}
    for mistake, rules in HIT_RULES.items():
        for rule in rules:
            hits = tuple(rule(q, d).tolist())
            assert hits != right and sum(a != b for a, b in zip(hits, right)) >= 2, mistake
            assert seen.setdefault(hits, mistake) == mistake, (mistake, seen[hits])
    assert any(right) and not all(right)


# ----------------------------------------------------------------------------- paired_difference


def solution_paired(correct_a, correct_b, seed=0):
    diff = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    n = len(diff)
    rounds = np.random.default_rng(seed).integers(0, n, size=(2000, n))
    low, high = np.percentile(diff[rounds].mean(axis=1), [2.5, 97.5])
    return 100 * diff.mean(), 100 * low, 100 * high


def loop_paired(correct_a, correct_b, seed=0):  # another correct way: a loop, two means per round, sorted ends
    a, b = np.asarray(correct_a, dtype=int), np.asarray(correct_b, dtype=int)
    rng = np.random.RandomState(seed)
    diffs = []
    for _ in range(2000):
        idx = rng.randint(0, len(a), len(a))
        diffs.append(a[idx].mean() - b[idx].mean())
    diffs.sort()
    return 100 * (a.mean() - b.mean()), 100 * diffs[50], 100 * diffs[1949]


def torch_paired(correct_a, correct_b, seed=0):  # another correct way: PyTorch, quantiles, a list out
    a = torch.as_tensor(np.asarray(correct_a), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(correct_b), dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(a), (2000, len(a)), generator=g)
    boots = a[idx].mean(1) - b[idx].mean(1)
    low, high = torch.quantile(boots, torch.tensor([0.025, 0.975]))
    return [100 * float(a.mean() - b.mean()), 100 * float(low), 100 * float(high)]


def choice_paired(correct_a, correct_b, seed=0):  # another correct way: rng.choice of the per-item differences
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    rng = np.random.default_rng(seed)
    boots = rng.choice(d, size=(2000, len(d)), replace=True).mean(axis=1)
    return 100 * d.mean(), 100 * np.quantile(boots, 0.025), 100 * np.quantile(boots, 0.975)


def global_seed_paired(correct_a, correct_b, seed=0):  # correct: seeds NumPy's global generator (the check restores it)
    np.random.seed(seed)
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    boots = d[np.random.randint(0, len(d), size=(2000, len(d)))].mean(axis=1)
    return tuple(100 * x for x in (d.mean(), np.percentile(boots, 2.5), np.percentile(boots, 97.5)))


def paired_normal(correct_a, correct_b, seed=0):  # accepted: paired, its interval the bootstrap's up to noise
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    se = d.std(ddof=1) / np.sqrt(len(d))
    return 100 * d.mean(), 100 * (d.mean() - 1.96 * se), 100 * (d.mean() + 1.96 * se)


def course_paired(correct_a, correct_b, seed=0):  # the course's own helper, which notebook 11 uses
    return paired_interval(correct_a, correct_b, seed=seed)


@pytest.mark.parametrize(
    "answer",
    [solution_paired, loop_paired, torch_paired, choice_paired, global_seed_paired, paired_normal, course_paired],
)
def test_paired_difference_correct_answers_pass(answer):
    result = run_check("paired_difference", answer)
    assert result.passed, result.feedback


def unpaired(correct_a, correct_b, seed=0):
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    rng = np.random.default_rng(seed)
    boot_a = a[rng.integers(0, len(a), size=(2000, len(a)))].mean(axis=1)
    boot_b = b[rng.integers(0, len(b), size=(2000, len(b)))].mean(axis=1)
    low, high = np.percentile(boot_a - boot_b, [2.5, 97.5])
    return 100 * (a.mean() - b.mean()), 100 * low, 100 * high


def unpaired_normal(correct_a, correct_b, seed=0):
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    pa, pb, n = a.mean(), b.mean(), len(a)
    se = np.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)
    return 100 * (pa - pb), 100 * (pa - pb - 1.96 * se), 100 * (pa - pb + 1.96 * se)


def ninety(correct_a, correct_b, seed=0):
    diff, _, _ = solution_paired(correct_a, correct_b, seed)
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    boots = d[np.random.default_rng(seed).integers(0, len(d), size=(2000, len(d)))].mean(axis=1)
    low, high = np.percentile(boots, [5, 95])
    return diff, 100 * low, 100 * high


def fractions(correct_a, correct_b, seed=0):
    return tuple(x / 100 for x in solution_paired(correct_a, correct_b, seed))


def b_minus_a(correct_a, correct_b, seed=0):
    return solution_paired(correct_b, correct_a, seed)


def permutations(correct_a, correct_b, seed=0):  # drawn without replacement: every round holds all the items
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    rng = np.random.default_rng(seed)
    boots = [d[rng.permutation(len(d))].mean() for _ in range(2000)]
    low, high = np.percentile(boots, [2.5, 97.5])
    return 100 * d.mean(), 100 * low, 100 * high


def one_sd(correct_a, correct_b, seed=0):
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    boots = d[np.random.default_rng(seed).integers(0, len(d), size=(2000, len(d)))].mean(axis=1)
    return 100 * d.mean(), 100 * (d.mean() - boots.std()), 100 * (d.mean() + boots.std())


_calls = itertools.count(1000)


def unseeded(correct_a, correct_b, seed=0):  # another generator at every call (counted, so the test is repeatable)
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    boots = d[np.random.default_rng(next(_calls)).integers(0, len(d), size=(2000, len(d)))].mean(axis=1)
    return 100 * d.mean(), 100 * np.percentile(boots, 2.5), 100 * np.percentile(boots, 97.5)


def global_unseeded(correct_a, correct_b, seed=0):  # NumPy's global generator, never seeded
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    boots = d[np.random.randint(0, len(d), size=(2000, len(d)))].mean(axis=1)
    return 100 * d.mean(), 100 * np.percentile(boots, 2.5), 100 * np.percentile(boots, 97.5)


def low_diff_high(correct_a, correct_b, seed=0):
    diff, low, high = solution_paired(correct_a, correct_b, seed)
    return low, diff, high


def shuffles_in_place(correct_a, correct_b, seed=0):
    np.random.default_rng(seed).shuffle(correct_a)
    return solution_paired(correct_a, correct_b, seed)


def booleans_subtracted(correct_a, correct_b, seed=0):
    diff = correct_a - correct_b  # NumPy refuses to subtract booleans
    return 100 * diff.mean(), 0.0, 0.0


def around_zero(correct_a, correct_b, seed=0):  # the interval of the centred differences
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    boots = d[np.random.default_rng(seed).integers(0, len(d), size=(2000, len(d)))].mean(axis=1)
    low, high = np.percentile(boots - d.mean(), [2.5, 97.5])
    return 100 * d.mean(), 100 * low, 100 * high


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (unpaired, "unpaired_bootstrap"),
        (unpaired_normal, "unpaired_normal"),
        (ninety, "ninety_percent"),
        (fractions, "fractions"),
        (b_minus_a, "reversed"),
        (permutations, "no_resampling"),
        (lambda a, b, seed=0: (solution_paired(a, b)[0],) * 3, "no_resampling"),
        (one_sd, "one_standard_error"),
        (unseeded, "seed_ignored"),
        (global_unseeded, "seed_ignored"),
        (low_diff_high, "wrong_order"),
        (shuffles_in_place, "inputs_modified"),
        (lambda a, b, seed=0: {"diff": 5.0, "low": 3.0, "high": 7.0}, "wrong_type"),
        (lambda a, b, seed=0: solution_paired(a, b, seed)[:2], "wrong_type"),
        (booleans_subtracted, "crash"),
        (around_zero, "wrong_interval"),
        (lambda a, b, seed=0: (100 * (np.mean(a) - np.mean(b)) + 1, 0.0, 9.0), "wrong_difference"),
        (solution_paired(*paired_cases()["correlated"]), "not_a_function"),
    ],
)
def test_paired_difference_mistakes_have_their_own_name(answer, mistake):
    result = run_check("paired_difference", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_paired_difference_messages_show_the_case_and_leave_the_random_state_alone():
    feedback = run_check("paired_difference", unpaired).feedback
    assert "times as wide" in feedback and "ONE set of item indices" in feedback
    assert "A - B = +5.0 points" in feedback and "+3.4 to +6.6" in feedback
    assert "[2.5, 97.5]" in run_check("paired_difference", ninety).feedback
    state, py_state = np.random.get_state()[1].copy(), random.getstate()
    assert run_check("paired_difference", global_seed_paired).passed
    assert (np.random.get_state()[1] == state).all() and random.getstate() == py_state


def test_paired_difference_not_done():
    def stub(correct_a, correct_b, seed=0):
        raise NotImplementedError("Your code here")

    assert run_check("paired_difference", stub).mistake == "not_done"


@pytest.mark.parametrize("name", list(paired_cases()))
def test_paired_cases_separate_the_mistakes(name):
    a, b = paired_cases()[name]
    assert a.dtype == bool and len(a) == len(b) == 1000
    diff, low, high = reference_interval(a, b)
    assert diff == pytest.approx(100 * (a.mean() - b.mean()))
    assert low < diff < high
    width = high - low
    # the solution's own bootstraps, over several groups of seeds, stay well inside the accepted widths
    for first in (0, 100, 200):
        runs = np.array([solution_paired(a, b, s) for s in range(first, first + 5)])
        assert 0.93 <= (runs[:, 2] - runs[:, 1]).mean() / width <= 1.07
        ninety_runs = np.array([ninety(a, b, s) for s in range(first, first + 5)])
        assert 0.78 <= (ninety_runs[:, 2] - ninety_runs[:, 1]).mean() / width <= 0.89
    unpaired_width = unpaired_normal(a, b)[2] - unpaired_normal(a, b)[1]
    assert unpaired_width / width > 2


# ----------------------------------------------------------------------------- choose_rate


def solution_rate(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop]
    if not allowed:
        return None
    return max(allowed, key=lambda lr: results[lr]["dev"])


def loop_rate(results, pretrained_search, max_drop):  # another correct way: a loop, the drop written out
    best, best_dev = None, -1.0
    for lr in sorted(results):
        drop = pretrained_search - results[lr]["search"]
        if drop <= max_drop and results[lr]["dev"] > best_dev:
            best, best_dev = lr, results[lr]["dev"]
    return best


def sorted_rate(results, pretrained_search, max_drop):  # another correct way: sort by dev, the first that keeps
    for lr, r in sorted(results.items(), key=lambda item: -item[1]["dev"]):
        if r["search"] + max_drop >= pretrained_search:
            return lr
    return None


def numpy_rate(results, pretrained_search, max_drop):  # another correct way: NumPy arrays, -inf for the excluded
    rates = list(results)
    dev = np.array([results[lr]["dev"] for lr in rates])
    keep = np.array([results[lr]["search"] - pretrained_search >= -max_drop for lr in rates])
    if not keep.any():
        return None
    return rates[int(np.argmax(np.where(keep, dev, -np.inf)))]


@pytest.mark.parametrize("answer", [solution_rate, loop_rate, sorted_rate, numpy_rate, reference_choice])
def test_choose_rate_correct_answers_pass(answer):
    result = run_check("choose_rate", answer)
    assert result.passed, result.feedback


def by_test(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop]
    return max(allowed, key=lambda lr: results[lr]["test"]) if allowed else None


def best_dev(results, pretrained_search, max_drop):
    return max(results, key=lambda lr: results[lr]["dev"])


def by_search(results, pretrained_search, max_drop):
    return max(results, key=lambda lr: results[lr]["search"])


def drop_the_other_way(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if pretrained_search - r["search"] >= max_drop]
    return max(allowed, key=lambda lr: results[lr]["dev"]) if allowed else None


def as_a_ratio(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] / pretrained_search >= 1 - max_drop]
    return max(allowed, key=lambda lr: results[lr]["dev"]) if allowed else None


def strict(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if pretrained_search - r["search"] < max_drop]
    return max(allowed, key=lambda lr: results[lr]["dev"]) if allowed else None


def in_points(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if 100 * (pretrained_search - r["search"]) <= max_drop]
    return max(allowed, key=lambda lr: results[lr]["dev"]) if allowed else None


def largest_rate(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop]
    return max(allowed) if allowed else None


def falls_back(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop] or list(results)
    return max(allowed, key=lambda lr: results[lr]["dev"])


def no_empty_check(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop]
    return max(allowed, key=lambda lr: results[lr]["dev"])


def dev_accuracy(results, pretrained_search, max_drop):
    lr = solution_rate(results, pretrained_search, max_drop)
    return None if lr is None else results[lr]["dev"]


def pops(results, pretrained_search, max_drop):
    for lr in list(results):
        if results[lr]["search"] < pretrained_search - max_drop:
            results.pop(lr)
    return max(results, key=lambda lr: results[lr]["dev"]) if results else None


def lowest_dev(results, pretrained_search, max_drop):
    allowed = [lr for lr, r in results.items() if r["search"] >= pretrained_search - max_drop]
    return min(allowed, key=lambda lr: results[lr]["dev"]) if allowed else None


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (by_test, "chose_on_test"),
        (best_dev, "ignored_search"),
        (by_search, "chose_by_search"),
        (drop_the_other_way, "constraint_sign"),
        (as_a_ratio, "relative_drop"),
        (strict, "strict_boundary"),
        (in_points, "max_drop_as_points"),
        (largest_rate, "max_of_rates"),
        (falls_back, "never_none"),
        (no_empty_check, "raises_instead_of_none"),
        (dev_accuracy, "returned_accuracy"),
        (lambda results, pre, drop: str(solution_rate(results, pre, drop)), "not_a_rate"),
        (pops, "inputs_modified"),
        (lowest_dev, "wrong_choice"),
        (lambda results, pre, drop: results["5e-5"], "crash"),
        (5e-5, "not_a_function"),
    ],
)
def test_choose_rate_mistakes_have_their_own_name(answer, mistake):
    result = run_check("choose_rate", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_choose_rate_messages_show_a_case():
    feedback = run_check("choose_rate", strict).feedback
    assert ">=" in feedback and "max_drop 0.125" in feedback and "you return 5e-05; the rule gives 0.0001" in feedback
    assert "test set" in run_check("choose_rate", by_test).feedback
    assert "max() of an empty list" in run_check("choose_rate", no_empty_check).feedback


def test_every_wrong_rate_rule_has_its_own_choices():
    cases = rate_cases()
    right = tuple(reference_choice(*case) for case in cases.values())
    assert None in right and len(set(right)) > 2
    seen: dict[tuple, str] = {}
    for mistake, rules in RATE_RULES.items():
        for rule in rules:
            choices = tuple(rule(*case) for case in cases.values())
            assert choices != right, mistake
            assert seen.setdefault(choices, mistake) == mistake, (mistake, seen[choices])


@pytest.mark.parametrize("name", list(rate_cases()))
def test_rate_cases_are_far_from_ties(name):
    results, pretrained, max_drop = rate_cases()[name]
    for key in ("dev", "test", "search"):
        values = sorted(r[key] for r in results.values())
        assert all(b - a >= 0.01 - 1e-12 for a, b in zip(values, values[1:])), key
    for r in results.values():  # every search accuracy a point from the limit, but the boundary case's
        gap = abs(r["search"] - (pretrained - max_drop))
        assert gap >= 0.01 - 1e-12 or (name == "boundary" and gap == 0), r
    if name == "boundary":  # exact in binary: every way of writing the comparison agrees
        s = min(r["search"] for r in results.values())
        assert s >= pretrained - max_drop and pretrained - s <= max_drop and s + max_drop >= pretrained
        assert s - pretrained >= -max_drop and not s > pretrained - max_drop


# ----------------------------------------------------------------------------- the notebooks


def test_released_notebook_holds_no_answer():
    solution = nbformat.read(REPO / "solutions" / f"{STEM}.ipynb", as_version=4)
    released = nbformat.read(REPO / "exercises" / f"{STEM}.ipynb", as_version=4)
    code = "\n".join(c.source for c in released.cells if c.cell_type == "code")
    for word in ("normalize(torch.as_tensor", ".argmax(dim=1) ==", "default_rng(seed).integers", "[2.5, 97.5]"):
        assert word not in code, word
    assert ">= pretrained_search - max_drop" not in code
    text = json.dumps([c.source for c in released.cells])
    assert "BEGIN SOLUTION" not in text
    stubs = [c.source for c in released.cells if c.cell_type == "code" and "NotImplementedError" in c.source]
    assert len(stubs) == 3 and all("hint(" in s for s in stubs)
    assert exercises.render(exercises.make_exercise(solution, STEM)) == (
        REPO / "exercises" / f"{STEM}.ipynb"
    ).read_text(encoding="utf-8")
    assert solution.metadata["tl_course"]["assignment"] == STEM
