"""Helpers for the transfer-learning course.

Import the submodules you need; importing the package has no side effects
(no seeding, no device selection, no downloads)::

    from tl_helpers import data, device, features, models, plots, train
"""

__version__ = "0.1.0"
