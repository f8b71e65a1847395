"""Interfaces for administrators: the ``manage.py`` commands (``commands/``, thin), what they share
(`cli`: argument parsing that fails with one line and exit 2; `output`: tables, JSON and CSV) and the
demonstration data of ``seed_demo`` (`demo`). May import services, selectors and the core; nothing
imports this room but Django's command loader (and the tests).
"""

from __future__ import annotations
