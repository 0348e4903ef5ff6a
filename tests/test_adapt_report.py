"""tl_helpers.adapt.report: report.md, a self-contained report.html, results.json and the figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tl_helpers.adapt.report import LIST_CAP, load_results, write_report
from tl_helpers.adapt.result import AdaptResult, Comparison, ConfusedPair, CurvePoint, StrategyResult

EVIL = "<script>alert(1)</script>"
CLASSES = ["chat", "café ☕", EVIL]
DECISION = (
    "Chose two-phase (91.7 % on 36 validation images): two-phase +4.1 points over the probe, "
    "95 % interval +2.0 to +6.2."
)


def make_result() -> AdaptResult:
    val = [True] * 30 + [False] * 6
    return AdaptResult(
        root="/data/my photos",
        classes=CLASSES,
        inspection={
            "root": "/data/my photos",
            "image_size": 64,
            "geometry": "shorter side to S, centre crop",
            "classes": CLASSES,
            "counts": {"chat": 40, "café ☕": 40, EVIL: 40},
            "total": 120,
            "unreadable": [{"file": f"chat/broken{i}.jpg", "reason": "truncated file"} for i in range(25)],
            "not_images": ["chat/notes.txt"],
            "ignored": [],
            "duplicates": [["chat/a.jpg", "chat/a copy.jpg"]],
            "conflicts": [{"sha256": "ab" * 32, "files": [f"{EVIL}/x.png", "chat/x.png"], "classes": [EVIL, "chat"]}],
            "formats": {"JPEG": 100, "PNG": 20},
            "modes": {"RGB": 119, "L": 1},
            "sizes": {"width": {"min": 64, "median": 640, "max": 4000}, "height": {"min": 48, "median": 480}},
            "exif_rotated": 3,
            "cache_file": None,
        },
        split_sizes={
            "train": {c: 24 for c in CLASSES},
            "val": {c: 12 for c in CLASSES},
            "test": {c: 4 for c in CLASSES},
        },
        strategies=[
            StrategyResult("probe", 30 / 36, val, {"C": 0.5}, 10.0, 8.2, 72),
            StrategyResult("two-phase", 33 / 36, val[3:] + [True] * 3, {"epochs": 3, "lr": 1e-3}, 60.0, 71.5, 432),
        ],
        comparisons=[Comparison("two-phase", "probe", 4.1, 2.0, 6.2)],
        chosen="two-phase",
        decision=DECISION,
        test_accuracy=10 / 12,
        test_interval=(0.552, 0.953),
        per_class={c: {"precision": 0.8, "recall": 0.75, "support": 4} for c in CLASSES},
        confusion=[[3, 1, 0], [0, 4, 0], [1, 0, 3]],
        confused_pairs=[ConfusedPair("chat", "café ☕", 1, [1]), ConfusedPair(EVIL, "chat", 1, [9])],
        test_files=[f"{CLASSES[i // 4]}/img{i}.png" for i in range(12)],
        curve=[CurvePoint(0.25, 18, 0.72), CurvePoint(0.5, 36, 0.8), CurvePoint(1.0, 72, 0.83)],
        curve_text="From 36 to 72 training images the probe went from 80.0 % to 83.3 %: still rising.",
        planned_seconds=90.0,
        spent_seconds=97.3,
        timings={"inspect": 2.0, "features": 5.1, "probe": 3.1, "two-phase": 71.5},
        device="cpu (2 threads)",
        seed=0,
        image_size=64,
        backbone="efficientnet_lite0",
        budget_minutes=10.0,
        versions={"torch": "2.14.1", "timm": "1.0.31"},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AdaptResult]:
    folder = tmp_path_factory.mktemp("report") / "out"
    result = make_result()
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    write_report(folder, result, test_images=images)
    return folder, result


def test_files_written(report: tuple[Path, AdaptResult]) -> None:
    folder, _ = report
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "report.md",
        "report.html",
        "results.json",
        "confusion.png",
        "label_curve.png",
        "confused_pairs.png",
    }
    for name in ("confusion.png", "label_curve.png", "confused_pairs.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_html_is_self_contained_and_escaped(report: tuple[Path, AdaptResult]) -> None:
    page = (report[0] / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?data:)""", page, re.IGNORECASE)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 3
    assert "café ☕" in page
    assert "+4.1 points over the probe, 95 % interval +2.0 to +6.2" in page


def test_markdown_sections(report: tuple[Path, AdaptResult]) -> None:
    md = (report[0] / "report.md").read_text(encoding="utf-8")
    assert DECISION in md
    assert "two-phase +4.1 points over the probe, 95 % interval +2.0 to +6.2" in md
    for section in (
        "## Data",
        "## Split",
        "## Strategies",
        "## Decision",
        "## Test",
        "## Would more labels help?",
        "## Time",
        "## Reproduce",
    ):
        assert section in md
    assert "<script>" not in md and "\\<script\\>" in md
    assert "![Test confusion matrix](confusion.png)" in md
    # 25 unreadable files: the first LIST_CAP listed, then a count of the rest
    assert "chat/broken19.jpg: truncated file" in md and "chat/broken20.jpg" not in md
    assert f"… and {25 - LIST_CAP} more" in md
    assert "chat/a.jpg = chat/a copy.jpg" in md
    assert "83.3 %" in md and "55.2 to 95.3 %" in md  # test accuracy and its interval


def test_results_json_round_trips(report: tuple[Path, AdaptResult]) -> None:
    folder, result = report
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result.to_dict()))
    assert load_results(folder / "results.json") == result


def test_without_test_images_or_mistakes(tmp_path: Path) -> None:
    result = make_result()
    result.confused_pairs = []
    result.curve = []
    result.inspection = {}
    write_report(tmp_path, result)
    assert not (tmp_path / "confused_pairs.png").exists() and not (tmp_path / "label_curve.png").exists()
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1
    assert "No test image was misclassified." in (tmp_path / "report.md").read_text(encoding="utf-8")
