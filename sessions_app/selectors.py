"""Reads: the APIs' queries (``auth.sessions``, ``api_key.query``, audit), the charts' aggregates and single
objects. Selectors scope by owner first, then apply the caller's query in the database; the browser's
keyset-paged tables build on them (`sessions_app.tables`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import CharField, Count, QuerySet
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.models import ApiKey, AuditEvent, AuditRecord, UserSession
from sessions_app.query.ast import QueryOptions
from sessions_app.query.execution import iter_rows, run_query
from sessions_app.specs import API_KEY_SPEC, AUDIT_SPEC, SESSION_SPEC


def session_scope(
    *, history: bool = False, device: bool = False, user: Any = None, current_pk: int | None = None
) -> tuple[QuerySet[UserSession], dict[str, Any]]:
    """The sessions a query may see, and the row context (`session_context`)."""
    qs = UserSession.objects.all() if history else UserSession.objects.active()
    if user is not None:
        qs = qs.filter(user=user)
    return qs, session_context(history=history, device=device, current_pk=current_pk)


def session_context(
    *, history: bool = False, device: bool = False, current_pk: int | None = None
) -> dict[str, Any]:
    """What building an ``auth.sessions`` row needs beside its columns: the caller's session (for
    ``current``) and whether the row has the ended keys (``history``) and the device objects."""
    return {"current_pk": current_pk, "history": history, "device": device}


def session_query(
    *, filters: object = None, options: object = None, user: Any = None, current_pk: int | None = None
) -> list[dict[str, Any]] | dict[str, Any] | int:
    """``auth.sessions``: active sessions (all with ``extra.history``), filtered in the database.

    ``user`` restricts the scope to one user's sessions (``auth.my_sessions``): the restriction is
    applied before the caller's filters, which cannot widen it. ``current_pk`` is the caller's own
    session. ``extra.device`` adds the ``device`` and ``location`` objects (see `specs`). Raises
    `QueryError` / `MatchNotFound`.
    """

    def scope(opts: QueryOptions) -> tuple[QuerySet[UserSession], Mapping[str, Any]]:
        return session_scope(
            history=opts.extra.get("history") is True,
            device=opts.extra.get("device") is True,
            user=user,
            current_pk=current_pk,
        )

    user_key = user.pk if user is not None else None
    return run_query(SESSION_SPEC, scope, filters, options, cache_key=("sessions", user_key, current_pk))


def session_rows(
    *, history: bool = False, device: bool = False, user: Any = None, current_pk: int | None = None
) -> list[dict[str, Any]]:
    """Every row of the scope as ``auth.sessions`` dicts, oldest first (for the in-memory engine)."""
    qs, context = session_scope(history=history, device=device, user=user, current_pk=current_pk)
    fields = SESSION_SPEC.row_fields_for(QueryOptions(extra={"device": device}))
    return list(iter_rows(qs.order_by("created_at", "id"), SESSION_SPEC, context, fields=fields))


def api_key_query(*, filters: object = None, options: object = None, user: Any = None) -> Any:
    """``api_key.query``: keys (all, or ``user``'s own), filtered in the database."""

    def scope(opts: QueryOptions) -> tuple[QuerySet[ApiKey], Mapping[str, Any]]:
        qs = ApiKey.objects.annotate(user_identifier=Cast("user_id", output_field=CharField()))
        return (qs.filter(user=user) if user is not None else qs), {}

    return run_query(
        API_KEY_SPEC, scope, filters, options, cache_key=("api_keys", user.pk if user is not None else None)
    )


def audit_query(*, filters: object = None, options: object = None) -> Any:
    """``audit.query``: audit records, filtered in the database (``event_data`` paths in Python)."""

    def scope(opts: QueryOptions) -> tuple[QuerySet[AuditRecord], Mapping[str, Any]]:
        return AuditRecord.objects.all(), {}

    return run_query(AUDIT_SPEC, scope, filters, options, cache_key=("audit",))


# --- chart aggregates and single objects ---------------------------------------------------------


def session_get_active(*, public_id: str, user: Any = None) -> UserSession | None:
    """The active session with this public id (only among ``user``'s own when given), or None."""
    qs = UserSession.objects.active(timezone.now()).filter(public_id=public_id)
    if user is not None:
        qs = qs.filter(user=user)
    return qs.first()


def session_counts_by_credentials(*, now: dt.datetime | None = None) -> list[tuple[str, int]]:
    """Active sessions per credential type, most frequent first (the dashboard's bar chart)."""
    counts = (
        UserSession.objects.active(now or timezone.now())
        .values_list("credentials")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return sorted(((str(c), int(n)) for c, n in counts), key=lambda item: (-item[1], item[0]))


def audit_logins_per_hour(
    *, now: dt.datetime | None = None, hours: int = 24
) -> list[tuple[dt.datetime, int, int]]:
    """``(hour, successful, failed)`` AUTHENTICATION audit records for each of the last ``hours``
    hours (oldest first, the current partial hour last, empty hours included)."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=hours)
    buckets = {start + dt.timedelta(hours=i): [0, 0] for i in range(hours)}
    counts = (
        AuditRecord.objects.filter(event=AuditEvent.AUTHENTICATION, timestamp__gte=start, timestamp__lt=end)
        .annotate(hour=TruncHour("timestamp", tzinfo=dt.UTC))
        .values_list("hour", "success")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for hour, success, n in counts:
        bucket = buckets.get(hour.astimezone(dt.UTC))
        if bucket is not None:
            bucket[0 if success else 1] += int(n)
    return [(hour, ok, failed) for hour, (ok, failed) in buckets.items()]


def api_key_get(*, key_id: int, user: Any = None) -> ApiKey | None:
    """The API key ``key_id`` (only among ``user``'s own when given), or None."""
    qs = ApiKey.objects.select_related("user").filter(pk=key_id)
    if user is not None:
        qs = qs.filter(user=user)
    return qs.first()


def api_key_rows(*, user: Any = None) -> list[dict[str, Any]]:
    """``api_key.query`` rows (all, or ``user``'s own), newest first."""
    rows = api_key_query(user=user, options={"order_by": ["-created_at", "-id"]})
    assert isinstance(rows, list)
    return rows


def totp_device_get(*, user: Any, confirmed: bool | None = True) -> TOTPDevice | None:
    """The user's TOTP device (confirmed, unconfirmed, or either with ``confirmed=None``)."""
    qs = TOTPDevice.objects.filter(user=user)
    if confirmed is not None:
        qs = qs.filter(confirmed=confirmed)
    return qs.order_by("-pk").first()


def user_get_by_username(*, username: object) -> Any:
    """The user with this username, or None (also for anything that cannot be a username)."""
    if not isinstance(username, str) or not 1 <= len(username) <= 150:
        return None
    model = get_user_model()
    return model._default_manager.filter(**{model.USERNAME_FIELD: username}).first()
