"""Self-check exercises: ``check("freeze_backbone", model)`` gives immediate, specific feedback.

Every exercise has one id, the same in ``check(...)``, ``hint(...)``, its solution's ``# EXERCISE:`` line
and its gradebook column (:mod:`.registry`: :data:`EXERCISES`). One module per topic registers its check
functions and declares its exercises with their hints (:mod:`.splits`, :mod:`.pretrained`,
:mod:`.feature_extraction`, :mod:`.freezing`, :mod:`.heads`, :mod:`.fine_tuning`, :mod:`.language`,
:mod:`.outcomes`, :mod:`.transfer`, :mod:`.own_images`, :mod:`.source`, :mod:`.search`); :mod:`.table` says which
exercise grades which notebook variables of which exercise notebook; :mod:`.hints` gives step-by-step hints on
request. Everything a notebook or the grader needs is importable from here::

    from tl_helpers.checks import check, hint
"""

from __future__ import annotations

from tl_helpers.checks import (
    feature_extraction,
    fine_tuning,
    freezing,
    heads,
    language,
    outcomes,
    own_images,
    pretrained,
    search,
    source,
    splits,
    transfer,
)
from tl_helpers.checks.core import CHECKS, Check, CheckResult, is_finite_number, run_check
from tl_helpers.checks.hints import HINTS, hint, hints_used
from tl_helpers.checks.registry import EXERCISES, Exercise, check
from tl_helpers.checks.table import ASSIGNMENTS, total_points

TOPICS = (
    splits,
    pretrained,
    feature_extraction,
    freezing,
    heads,
    fine_tuning,
    language,
    outcomes,
    transfer,
    own_images,
    source,
    search,
)

__all__ = [
    "ASSIGNMENTS",
    "CHECKS",
    "EXERCISES",
    "HINTS",
    "TOPICS",
    "Check",
    "CheckResult",
    "Exercise",
    "check",
    "hint",
    "hints_used",
    "is_finite_number",
    "run_check",
    "total_points",
]
