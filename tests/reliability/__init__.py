"""Reliability under load and faults: security.md group D (D1–D18), marked ``reliability``."""

from __future__ import annotations
