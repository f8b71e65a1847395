"""All reads. Selectors scope by owner first, then apply the caller's query in the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone

from sessions_app.models import ApiKey, AuditRecord, UserSession
from sessions_app.query.ast import QueryOptions
from sessions_app.query.compiler import iter_rows, run_query
from sessions_app.specs import API_KEY_SPEC, AUDIT_SPEC, SESSION_SPEC


def session_scope(
    *, history: bool = False, user: Any = None, current_pk: int | None = None
) -> tuple[QuerySet[UserSession], dict[str, Any]]:
    """The sessions a query may see, and the row context (``current`` and history keys)."""
    qs = UserSession.objects.all() if history else UserSession.objects.active(timezone.now())
    if user is not None:
        qs = qs.filter(user=user)
    return qs, {"current_pk": current_pk, "history": history}


def session_query(
    *, filters: object = None, options: object = None, user: Any = None, current_pk: int | None = None
) -> list[dict[str, Any]] | dict[str, Any] | int:
    """``auth.sessions``: active sessions (all with ``extra.history``), filtered in the database.

    ``user`` restricts the scope to one user's sessions (``auth.my_sessions``): the restriction is
    applied before the caller's filters, which cannot widen it. ``current_pk`` is the caller's own
    session. Raises `QueryError` / `MatchNotFound`.
    """

    def scope(opts: QueryOptions) -> tuple[QuerySet[UserSession], Mapping[str, Any]]:
        return session_scope(history=opts.extra.get("history") is True, user=user, current_pk=current_pk)

    return run_query(SESSION_SPEC, scope, filters, options)


def session_rows(
    *, history: bool = False, user: Any = None, current_pk: int | None = None
) -> list[dict[str, Any]]:
    """Every row of the scope as ``auth.sessions`` dicts, oldest first (for the in-memory engine)."""
    qs, context = session_scope(history=history, user=user, current_pk=current_pk)
    return list(iter_rows(qs.order_by("created_at", "id"), SESSION_SPEC, context))


def api_key_query(*, filters: object = None, options: object = None, user: Any = None) -> Any:
    """``api_key.query``: keys (all, or ``user``'s own), filtered in the database."""

    def scope(opts: QueryOptions) -> tuple[QuerySet[ApiKey], Mapping[str, Any]]:
        qs = ApiKey.objects.annotate(user_identifier=Cast("user_id", output_field=CharField()))
        return (qs.filter(user=user) if user is not None else qs), {}

    return run_query(API_KEY_SPEC, scope, filters, options)


def audit_query(*, filters: object = None, options: object = None) -> Any:
    """``audit.query``: audit records, filtered in the database (``event_data`` paths in Python)."""

    def scope(opts: QueryOptions) -> tuple[QuerySet[AuditRecord], Mapping[str, Any]]:
        return AuditRecord.objects.all(), {}

    return run_query(AUDIT_SPEC, scope, filters, options)
