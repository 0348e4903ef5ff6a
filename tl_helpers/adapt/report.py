"""The ``adapt`` report: ``report.md``, a self-contained ``report.html``, ``results.json`` and the figures.

:func:`write_report` renders one :class:`~tl_helpers.adapt.result.AdaptResult` twice from
the same blocks, so the Markdown and the HTML say the same thing:

- ``report.md``: readable as plain text; links the PNG figures beside it;
- ``report.html``: one file that opens offline: inline CSS, the figures embedded as
  ``data:image/png;base64`` images, no script and no external address (a
  Content-Security-Policy forbids loading anything);
- ``results.json``: :meth:`AdaptResult.to_dict` (:func:`load_results` reads it back);
- ``confusion.png``, ``label_curve.png`` and, given the test images, ``confused_pairs.png``.

Every string that comes from a file or class name is escaped (HTML entities in the HTML,
backslashes in the Markdown). Figures are drawn with :class:`matplotlib.figure.Figure` and
the Agg canvas directly, so nothing changes matplotlib's global backend.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tl_helpers.adapt.result import AdaptResult, Comparison, ConfusedPair, CurvePoint, StrategyResult

__all__ = ["LIST_CAP", "load_results", "write_report"]

LIST_CAP = 20
"""Longest list of files printed in full; longer ones end with "… and N more"."""

_PROBLEM_TITLES = {
    "unreadable": "Unreadable images (skipped)",
    "not_images": "Not images (skipped)",
    "duplicates": "Identical files within a class (first kept, others dropped)",
    "conflicts": "Label conflicts: identical files in several classes (all copies excluded)",
    "ignored": "Ignored (hidden or tool entries, files outside the class folders)",
}
# Shown elsewhere (title, class table) or of no interest to a reader.
_INSPECTION_SKIP = {"root", "classes", "counts"}


# ----------------------------------------------------------------------------- blocks


@dataclass
class _Figure:
    name: str
    alt: str
    png: bytes


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    align_right: set[int] = field(default_factory=set)


@dataclass
class _Doc:
    """The report as an ordered list of blocks, rendered to Markdown and to HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str, *, strong: bool = False) -> None:
        self.blocks.append(("p", (text, strong)))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers: list[str], rows: list[list[str]], align_right: set[int] | None = None) -> None:
        self.blocks.append(("table", _Table(headers, rows, align_right or set())))

    def figure(self, fig: _Figure | None) -> None:
        if fig is not None:
            self.blocks.append(("figure", fig))


def _md_escape(text: str) -> str:
    """Backslash-escape what Markdown would read as markup or raw HTML (``<script>``, ``*``, ``|``...)."""
    out = text.replace("\\", "\\\\")
    for ch in "`*<>[]|#":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def _render_markdown(doc: _Doc) -> str:
    """The blocks as Markdown (figures linked by file name)."""
    lines: list[str] = []
    for kind, value in doc.blocks:
        if kind == "h":
            level, text = value
            lines += ["#" * level + " " + _md_escape(text), ""]
        elif kind == "p":
            text, strong = value
            lines += [f"**{_md_escape(text)}**" if strong else _md_escape(text), ""]
        elif kind == "ul":
            lines += [f"- {_md_escape(item)}" for item in value] + [""]
        elif kind == "table":
            t: _Table = value
            lines.append("| " + " | ".join(_md_escape(h) for h in t.headers) + " |")
            lines.append("|" + "|".join("---:" if i in t.align_right else "---" for i in range(len(t.headers))) + "|")
            lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in t.rows]
            lines.append("")
        elif kind == "figure":
            fig: _Figure = value
            lines += [f"![{_md_escape(fig.alt)}]({fig.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       background: #fff; margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin-top: 0; word-break: break-word; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.93em; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
ul { padding-left: 1.4em; } li { word-break: break-word; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0 1em; }
p.strong { font-weight: 600; background: #eef6ee; border-left: 4px solid #3a8a3a; padding: 6px 10px; }
"""
# No network, no script: everything the page shows is in the file.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _render_html(doc: _Doc, title: str) -> str:
    """The blocks as one self-contained HTML page (figures embedded as base64 PNG)."""
    esc = html.escape
    body: list[str] = []
    for kind, value in doc.blocks:
        if kind == "h":
            level, text = value
            body.append(f"<h{level}>{esc(text)}</h{level}>")
        elif kind == "p":
            text, strong = value
            body.append(f'<p class="strong">{esc(text)}</p>' if strong else f"<p>{esc(text)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in value) + "</ul>")
        elif kind == "table":
            t: _Table = value

            def cls(i: int, table: _Table = t) -> str:
                return ' class="num"' if i in table.align_right else ""

            head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(t.headers))
            rows = "".join(
                "<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in t.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            fig: _Figure = value
            data = base64.b64encode(fig.png).decode("ascii")
            body.append(f'<img alt="{esc(fig.alt)}" src="data:image/png;base64,{data}">')
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- formatting


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _value(v: Any) -> str:
    """A setting or inspection value in a few characters."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return str(v)


def _item(entry: Any) -> str:
    """One entry of an inspection list (a file, a group of files, a ``{"file", "reason"}`` record...)."""
    if isinstance(entry, Mapping):
        if set(entry) == {"file", "reason"}:
            return f"{entry['file']}: {entry['reason']}"
        if "files" in entry:
            rest = {k: v for k, v in entry.items() if k not in ("files", "sha256")}
            tail = "; ".join(f"{k}: {_value(v)}" for k, v in rest.items())
            return _value(entry["files"]) + (f" ({tail})" if tail else "")
        return "; ".join(f"{k}: {_value(v)}" for k, v in entry.items())
    if isinstance(entry, (list, tuple)):
        return " = ".join(str(x) for x in entry)
    return str(entry)


def _capped(items: Sequence[Any], cap: int = LIST_CAP) -> list[str]:
    lines = [_item(x) for x in items[:cap]]
    if len(items) > cap:
        lines.append(f"… and {len(items) - cap} more")
    return lines


def _humanise(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _comparison_text(c: Comparison) -> str:
    if c.low > 0:
        verdict = "better beyond the noise"
    elif c.high < 0:
        verdict = "worse beyond the noise"
    else:
        verdict = "not distinguishable from it"
    return (
        f"{c.name} {c.difference:+.1f} points over the {c.baseline}, "
        f"95 % interval {c.low:+.1f} to {c.high:+.1f} ({verdict})"
    )


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


# ----------------------------------------------------------------------------- figures


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")  # class names in scripts DejaVu lacks
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _mpl(text: str, limit: int = 24) -> str:
    """A class name safe for matplotlib (``$`` would start mathtext) and short enough for an axis."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _confusion_figure(result: AdaptResult) -> _Figure | None:
    from matplotlib.figure import Figure

    matrix = result.confusion
    k = len(matrix)
    if not k:
        return None
    side = min(14.0, max(4.0, 0.5 * k + 2.5))
    fig = Figure(figsize=(side, side * 0.85))
    ax = fig.add_subplot()
    rows = [sum(r) or 1 for r in matrix]
    share = [[c / n for c in r] for r, n in zip(matrix, rows)]
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [_mpl(c) for c in result.classes[:k]]
    tilt = k > 3 or max(len(n) for n in names) > 8
    ax.set_xticks(range(k), names, rotation=40 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if matrix[i][j]:
                    colour = "white" if share[i][j] > 0.5 else "black"
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color=colour, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title("Test confusion matrix (counts; colour = share of the row)")
    return _Figure("confusion.png", "Test confusion matrix", _png(fig))


def _curve_figure(curve: Sequence[CurvePoint]) -> _Figure | None:
    from matplotlib.figure import Figure

    if not curve:
        return None
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    xs = [p.n_train for p in curve]
    ys = [100 * p.val_accuracy for p in curve]
    ax.plot(xs, ys, marker="o")
    for p, x, y in zip(curve, xs, ys):
        ax.annotate(f"{100 * p.fraction:.0f} %", (x, y), textcoords="offset points", xytext=(0, 7), ha="center")
    ax.set_xlabel("training images")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Would more labels help? (the probe on part of the training set)")
    ax.grid(alpha=0.3)
    lo, hi = min(ys), max(ys)
    ax.set_ylim(max(0.0, lo - 5), min(100.0, hi + 5) if hi < 100 else 101)
    return _Figure("label_curve.png", "Label curve: validation accuracy against training images", _png(fig))


def _displayable(image: torch.Tensor) -> Any:
    """A C x H x W image (uint8 0..255 or float 0..1) as an array ``imshow`` takes."""
    image = image.detach().cpu()
    image = image.float().div(255) if image.dtype == torch.uint8 or image.max() > 1 else image.float()
    image = image.clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _pairs_figure(
    pairs: Sequence[ConfusedPair], test_images: torch.Tensor | None, test_files: Sequence[str], *, per_pair: int = 4
) -> _Figure | None:
    from matplotlib.figure import Figure

    if test_images is None:
        return None
    n = len(test_images)
    shown = [(pair, [i for i in pair.examples if 0 <= i < n][:per_pair]) for pair in pairs[:3]]
    shown = [(pair, idx) for pair, idx in shown if idx]
    if not shown:
        return None
    cols = max(len(idx) for _, idx in shown)
    fig = Figure(figsize=(2.2 * cols, 2.7 * len(shown)), layout="constrained")
    for sub, (pair, idx) in zip(fig.subfigures(len(shown), 1, squeeze=False)[:, 0], shown):
        sub.suptitle(_mpl(f"true {pair.true} → predicted {pair.predicted} ({pair.count}×)", 90), fontsize=10)
        for col, ax in enumerate(sub.subplots(1, cols, squeeze=False)[0]):
            ax.axis("off")
            if col >= len(idx):
                continue
            i = idx[col]
            ax.imshow(_displayable(test_images[i]), cmap="gray")
            name = os.path.basename(test_files[i]) if i < len(test_files) else f"test image {i}"
            ax.set_title(_mpl(name, 22), fontsize=8)
    return _Figure("confused_pairs.png", "Examples of the most confused pairs", _png(fig))


# ----------------------------------------------------------------------------- sections


def _build(result: AdaptResult, figures: Mapping[str, _Figure | None]) -> _Doc:
    doc = _Doc()
    interval = result.test_interval
    doc.h(1, f"Adapt report: {result.root}")
    doc.p(
        f"Kept: {result.chosen}. Test accuracy {_pct(result.test_accuracy)} % "
        f"(95 % interval {_pct(interval[0])} to {_pct(interval[1])} %).",
        strong=True,
    )
    _data_section(doc, result)
    _split_section(doc, result)
    _strategies_section(doc, result)
    doc.h(2, "Decision")
    doc.p(result.decision, strong=True)
    _test_section(doc, result, figures)
    _curve_section(doc, result, figures)
    _time_section(doc, result)
    _reproduce_section(doc, result)
    return doc


def _data_section(doc: _Doc, result: AdaptResult) -> None:
    info = result.inspection or {}
    doc.h(2, "Data")
    counts = info.get("counts")
    if not isinstance(counts, Mapping):
        counts = {c: sum(part.get(c, 0) for part in result.split_sizes.values()) for c in result.classes}
    rows = [[str(name), str(n)] for name, n in counts.items()]
    rows.append(["total", str(sum(int(n) for n in counts.values()))])
    doc.table(["class", "usable images"], rows, {1})
    problems = {k: v for k, v in info.items() if isinstance(v, list) and k not in _INSPECTION_SKIP}
    ordered = [k for k in _PROBLEM_TITLES if k in problems] + [k for k in problems if k not in _PROBLEM_TITLES]
    clean = [_PROBLEM_TITLES.get(k, _humanise(k)) for k in ordered if not problems[k]]
    for key in ordered:
        items = problems[key]
        if items:
            doc.h(3, f"{_PROBLEM_TITLES.get(key, _humanise(key))}: {len(items)}")
            doc.ul(_capped(items))
    if clean:
        doc.p("None found: " + "; ".join(clean) + ".")
    details = []
    for key, value in info.items():
        if key in _INSPECTION_SKIP or isinstance(value, list) or value is None:
            continue
        if isinstance(value, Mapping):
            if value and all(isinstance(v, Mapping) for v in value.values()):
                text = "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
            else:
                text = _value(value) or "none"
        else:
            text = _value(value)
        details.append(f"{_humanise(key)}: {text}")
    if details:
        doc.h(3, "Details")
        doc.ul(details)


def _split_section(doc: _Doc, result: AdaptResult) -> None:
    doc.h(2, "Split")
    parts = list(result.split_sizes)
    names = list(result.classes) + sorted(
        {c for part in result.split_sizes.values() for c in part} - set(result.classes)
    )
    rows = []
    for name in names:
        ns = [int(result.split_sizes[p].get(name, 0)) for p in parts]
        rows.append([name, *map(str, ns), str(sum(ns))])
    totals = [sum(int(v) for v in result.split_sizes[p].values()) for p in parts]
    rows.append(["total", *map(str, totals), str(sum(totals))])
    doc.table(["class", *parts, "total"], rows, set(range(1, len(parts) + 2)))


def _settings(s: StrategyResult) -> str:
    return "; ".join(f"{k} {_value(v)}" for k, v in s.settings.items()) or "—"


def _strategies_section(doc: _Doc, result: AdaptResult) -> None:
    doc.h(2, "Strategies")
    n_val = len(result.strategies[0].val_correct) if result.strategies else 0
    doc.p(f"Each strategy trained on the training part and was scored on the same {n_val} validation images.")
    rows = [
        [
            s.name + (" (kept)" if s.name == result.chosen else ""),
            _pct(s.val_accuracy),
            _settings(s),
            f"{s.planned_seconds:.0f}",
            f"{s.seconds:.0f}",
            f"{s.image_passes:,}",
        ]
        for s in result.strategies
    ]
    doc.table(
        ["strategy", "validation accuracy %", "settings", "planned s", "spent s", "image passes"], rows, {1, 3, 4, 5}
    )
    if result.comparisons:
        doc.p("Against the probe, on the same validation images (paired 95 % intervals, in points):")
        doc.ul([_comparison_text(c) for c in result.comparisons])


def _test_section(doc: _Doc, result: AdaptResult, figures: Mapping[str, _Figure | None]) -> None:
    doc.h(2, "Test")
    low, high = result.test_interval
    n_test = sum(sum(r) for r in result.confusion) or sum(result.split_sizes.get("test", {}).values())
    doc.p(
        f"{result.chosen} on the {n_test} test images, touched once, after the decision: accuracy "
        f"{_pct(result.test_accuracy)} %, 95 % interval {_pct(low)} to {_pct(high)} % (Wilson)."
    )
    rows = [
        [name, _pct(m.get("precision", 0.0)), _pct(m.get("recall", 0.0)), str(int(m.get("support", 0)))]
        for name, m in result.per_class.items()
    ]
    doc.table(["class", "precision %", "recall %", "support"], rows, {1, 2, 3})
    k = len(result.confusion)
    if k:
        doc.h(3, "Confusion matrix (rows: true class, columns: predicted)")
        names = list(result.classes[:k])
        doc.table(
            ["true \\ predicted", *names],
            [[names[i], *map(str, row)] for i, row in enumerate(result.confusion)],
            set(range(1, k + 1)),
        )
        doc.figure(figures.get("confusion"))
    doc.h(3, "Most confused pairs")
    if not result.confused_pairs:
        doc.p("No test image was misclassified.")
        return
    items = []
    for pair in result.confused_pairs:
        files = [result.test_files[i] for i in pair.examples if 0 <= i < len(result.test_files)]
        shown = ", ".join(files[:4]) + (f" … and {len(files) - 4} more" if len(files) > 4 else "")
        items.append(f"{pair.true} → {pair.predicted}: {pair.count}" + (f" (e.g. {shown})" if shown else ""))
    doc.ul(items)
    doc.figure(figures.get("confused_pairs"))


def _curve_section(doc: _Doc, result: AdaptResult, figures: Mapping[str, _Figure | None]) -> None:
    doc.h(2, "Would more labels help?")
    if result.curve:
        rows = [[f"{100 * p.fraction:.0f} %", str(p.n_train), _pct(p.val_accuracy)] for p in result.curve]
        doc.table(["share of the training part", "training images", "validation accuracy %"], rows, {0, 1, 2})
        doc.figure(figures.get("label_curve"))
    doc.p(result.curve_text)


def _time_section(doc: _Doc, result: AdaptResult) -> None:
    doc.h(2, "Time")
    doc.p(
        f"Planned {_seconds(result.planned_seconds)}, spent {_seconds(result.spent_seconds)} "
        f"(budget {result.budget_minutes:g} min) on {result.device}."
    )
    total = sum(result.timings.values()) or 1.0
    rows = [[name, f"{s:.1f}", f"{100 * s / total:.0f}"] for name, s in result.timings.items()]
    if rows:
        doc.table(["phase", "seconds", "share %"], rows, {1, 2})


def _reproduce_section(doc: _Doc, result: AdaptResult) -> None:
    doc.h(2, "Reproduce")
    doc.ul(
        [
            f"Folder: {result.root}",
            f"Seed: {result.seed}",
            f"Image size: {result.image_size} px",
            f"Backbone: {result.backbone}",
            f"Budget: {result.budget_minutes:g} min",
        ]
    )
    if result.versions:
        doc.table(["package", "version"], [[k, str(v)] for k, v in result.versions.items()])


# ----------------------------------------------------------------------------- entry points


def write_report(folder: str | os.PathLike, result: AdaptResult, *, test_images: torch.Tensor | None = None) -> None:
    """Write ``report.md``, ``report.html``, ``results.json`` and the figures into ``folder``.

    Sections: title (folder and what was kept), Data, Split, Strategies (with the paired
    comparisons), Decision, Test (accuracy and interval, per class, confusion matrix, most
    confused pairs), Would more labels help?, Time, Reproduce.

    Args:
        folder: Where to write (created if missing); usually the folder from
            :func:`tl_helpers.adapt.export.atomic_output_dir`.
        result: What ``adapt`` measured.
        test_images: The test images (uint8 ``N x 3 x H x W``, aligned with ``result.test_files``);
            when given, ``confused_pairs.png`` shows examples of the top 3 confused pairs.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "confusion": _confusion_figure(result),
        "label_curve": _curve_figure(result.curve),
        "confused_pairs": _pairs_figure(result.confused_pairs, test_images, result.test_files),
    }
    for fig in figures.values():
        if fig is not None:
            (folder / fig.name).write_bytes(fig.png)
    doc = _build(result, figures)
    (folder / "report.md").write_text(_render_markdown(doc), encoding="utf-8")
    title = f"Adapt report: {result.root} (kept {result.chosen})"
    (folder / "report.html").write_text(_render_html(doc, title), encoding="utf-8")
    text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
    (folder / "results.json").write_text(text + "\n", encoding="utf-8")


def load_results(path: str | os.PathLike) -> AdaptResult:
    """Read a ``results.json`` back into an :class:`AdaptResult` (e.g. to render the report again)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data["strategies"] = [StrategyResult(**s) for s in data["strategies"]]
    data["comparisons"] = [Comparison(**c) for c in data["comparisons"]]
    data["confused_pairs"] = [ConfusedPair(**c) for c in data["confused_pairs"]]
    data["curve"] = [CurvePoint(**c) for c in data["curve"]]
    data["test_interval"] = tuple(data["test_interval"])
    return AdaptResult(**data)
