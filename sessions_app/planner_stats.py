"""Planner statistics as part of the product (issue 18): refreshed after bulk changes.

(Stub: the statistics helper fills this in.)
"""

from __future__ import annotations

from typing import Any


def refresh_after_bulk_change(model: Any, changed: int) -> None:
    """Refresh the planner's statistics of ``model``'s table when ``changed`` rows is a large share."""
