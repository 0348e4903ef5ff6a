"""Transfer learning on your own images: the course's measured decision as functions and a command.

``python -m tl_helpers adapt DIR --out OUT`` and ``python -m tl_helpers predict OUT IMAGE...`` are thin
layers over these modules (notebook 09 walks through them):

- :mod:`.inspection`: read and decode every image once, report unreadable files, duplicates, label conflicts.
- :mod:`.strategies`: split, plan within a budget, probe, two-phase, fine-tune, decide, label curve.
- :mod:`.run`: :func:`~tl_helpers.adapt.run.adapt`, all of the above in order.
- :mod:`.export`: write the kept model atomically, load it, predict, ONNX.
- :mod:`.report`: ``report.html`` / ``report.md`` / ``results.json``.
- :mod:`.result`: the records they share.
"""

from tl_helpers.adapt.run import adapt

__all__ = ["adapt"]
