"""Errors of the query language (pure Python).

Every problem with `query-filters` / `query-options` -- malformed input found while parsing, a field
that a method does not declare, or a mistake met while evaluating a leaf -- is a `QueryError`.
It subclasses `ValueError` so that callers that only know "bad value" still catch it, and it carries
the place of the offending element (`attribute`, e.g. ``filters[1][2]`` or ``options.limit``) so that
the interfaces can answer a client error naming it (JSON-RPC ``-32602`` with
``extra = [[attribute, message, 22]]``, HTTP 400).
"""

from __future__ import annotations

EINVAL = 22


class QueryError(ValueError):
    """A validation or evaluation error of query-filters / query-options."""

    errno = EINVAL

    def __init__(self, attribute: str, message: str) -> None:
        self.attribute = attribute
        self.message = message
        super().__init__(f"{attribute}: {message}" if attribute else message)

    def as_extra(self) -> list[list[object]]:
        """The TrueNAS ``ValidationErrors`` triple list for this error."""
        return [[self.attribute, self.message, self.errno]]


class MatchNotFound(QueryError):
    """``options.get`` was requested and no row matched."""

    def __init__(self) -> None:
        super().__init__("", "MatchNotFound()")

    def __repr__(self) -> str:
        return "MatchNotFound()"
