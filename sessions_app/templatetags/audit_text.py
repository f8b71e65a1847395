"""Audit records in words: the Details cell of the audit page.

Each record becomes one plain sentence from its event, outcome and ``event_data`` (``method``,
``mechanism``, ``credentials``, ``end_reason`` ...): "alice signed in with a password and a one-time
code", "admin terminated session 1a2b3c4d5e… of bob (reason: left the company)". The JSON stays
behind a disclosure for whoever needs every field. The sentences cover every record the service
writes (`sessions_app.audit.audit_record` callers, ``seed_demo``); a record no rule knows -- an event
or method added later, a record of an older release, a generic JSON-RPC or REST call -- still gets
one: what, by whom, and whether it failed.

Everything in a sentence came from a client or a record (user names, API key names, reasons,
filters) and goes through `format_html`: a name like ``<b>x</b>`` is shown as typed, never
interpreted. Nothing here reads the database.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from sessions_app import conf

register = template.Library()

#: An optional part of a sentence that is not there.
NOTHING = SafeString("")

#: How each login mechanism proves who it is, as the end of "signed in with ...".
MECHANISMS: Mapping[str, str] = {
    "PASSWORD_PLAIN": "a password",
    "OTP_TOKEN": "a one-time code",
    "API_KEY_PLAIN": "an API key",
    "SCRAM": "an API key (SCRAM)",
    "TOKEN_PLAIN": "a token",
    "NODE_HMAC": "a peer-node signature",
    "API_KEY_BEARER": "an API key (Bearer header)",
    "PASSWORD_BASIC": "a password (HTTP Basic)",
    "SESSION_COOKIE": "a session cookie",
}

#: The credential types of a session opened by a sign-in, as "signed in with ...".
CREDENTIALS: Mapping[str, str] = {
    "LOGIN_PASSWORD": "a password",
    "LOGIN_TWOFACTOR": "a password and a one-time code",
    "LOGIN_ONETIME_PASSWORD": "a one-time password from an administrator",
}

#: Why a session ended (``session.end``), after "Session … of bob ended".
END_REASONS: Mapping[str, str] = {
    "EXPIRED": "it reached its time limit",
    "IDLE": "it was idle too long",
    "PASSWORD_CHANGED": "the password was changed",
    "USER_DISABLED": "the account was disabled",
    "CREDENTIAL_REVOKED": "its credential was revoked",
    "PARENT_ENDED": "the session it came from ended",
    "EVICTED": "too many sessions were open",
    "LOGOUT": "signed out",
}

#: What a step-up (password asked again) was for: its ``method``, after "to".
STEP_UP_PURPOSES: Mapping[str, str] = {
    "web.password_change": "change their password",
    "auth.set_password": "change their password",
    "two_factor.start": "set up two-factor authentication",
    "two_factor.disable": "turn off two-factor authentication",
    "api_key.create": "create an API key",
    "api_key.reset": "reset an API key",
}

#: Counts of a history purge (``sessions.purge``), in words.
PURGE_COUNTS: Mapping[str, str] = {
    "ended_expired": "expired sessions ended",
    "ended_idle": "idle sessions ended",
    "sessions": "ended sessions deleted",
    "audit_records": "audit records deleted",
    "tokens": "tokens deleted",
    "sign_in_notices": "sign-in notices deleted",
    "known_devices": "known devices forgotten",
}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _who(name: Any) -> str:
    """A user name as recorded, or "someone" when the record has none."""
    return _text(name) or "someone"


def _number(value: Any) -> str:
    """``10760`` -> ``10,760``; anything that is not a count as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _text(value)


def _plural(count: Any, word: str, plural: str | None = None) -> SafeString:
    one = isinstance(count, int) and not isinstance(count, bool) and count == 1
    return format_html("{} {}", _number(count), word if one else (plural or f"{word}s"))


def _session(public_id: Any) -> SafeString:
    """A session id as the tables show it: the first 10 characters, all of it in the tooltip."""
    text = _text(public_id)
    if not text:
        return format_html("{}", "?")
    short = f"{text[:10]}…" if len(text) > 12 else text
    return format_html('<span class="mono" title="{}">{}</span>', text, short)


def _code(value: Any) -> SafeString:
    """A method name, a filter or other machine text, compact and at most 300 characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return format_html('<span class="mono">{}</span>', text if len(text) <= 300 else f"{text[:297]}…")


def _api_key(ref: Any) -> SafeString:
    """An ``api_key_ref`` (``"12:backup"``) or an ``api_key`` object as "API key 'backup' (#12)"."""
    if isinstance(ref, Mapping):
        key_id, name = ref.get("id"), ref.get("name")
    else:
        key_id, _, name = _text(ref).partition(":")
        if not name:
            return format_html("{}", "an unknown API key")
    return format_html("API key '{}' (#{})", _text(name), _text(key_id))


def _when(value: Any) -> str:
    try:
        moment = dt.datetime.fromisoformat(_text(value))
    except ValueError:
        return _text(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _because(data: Mapping[str, Any], key: str = "error") -> SafeString:
    return format_html(" ({})", _text(data[key])) if data.get(key) else NOTHING


# --- AUTHENTICATION --------------------------------------------------------------------------------


def _authentication(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    user = row.get("username")
    mechanism = _text(data.get("mechanism"))
    if data.get("step_up"):
        purpose = _text(data.get("method"))
        goal = STEP_UP_PURPOSES.get(purpose) or format_html("call {}", _code(purpose))
        proof = "their password and code" if mechanism == "OTP_TOKEN" else "their password"
        if row.get("success"):
            return format_html("{} confirmed {} to {}", _who(user), proof, goal)
        return format_html("{} failed to confirm {} to {}{}", _who(user), proof, goal, _because(data))
    if row.get("success"):
        return _signed_in(user, mechanism, data)
    return _failed_sign_in(user, mechanism, data)


def _signed_in(user: Any, mechanism: str, data: Mapping[str, Any]) -> SafeString:
    credentials = _text(data.get("credentials"))
    if data.get("per_request"):
        if data.get("api_key_ref"):
            return format_html("{} used {} (Bearer header)", _who(user), _api_key(data["api_key_ref"]))
        how = MECHANISMS.get(mechanism) or _code(mechanism)
        return format_html("{} authenticated a request with {}", _who(user), how)
    if credentials in CREDENTIALS:
        return format_html("{} signed in with {}", _who(user), CREDENTIALS[credentials])
    if credentials == "API_KEY":
        scram = " (SCRAM, channel-bound)" if data.get("channel_binding") else " (SCRAM)"
        suffix = scram if mechanism == "SCRAM" else ""
        return format_html("{} signed in with {}{}", _who(user), _api_key(data.get("api_key_ref")), suffix)
    if credentials == "TOKEN":
        return format_html(
            "{} signed in with a token of session {}", _who(user), _session(data.get("parent"))
        )
    if credentials == "TRUENAS_NODE":
        if data.get("node"):
            return format_html("Peer node {} signed in", _text(data["node"]))
        return format_html("{}", "A peer node signed in")
    if credentials == "UNIX_SOCKET":
        over = " (WebSocket)" if data.get("transport") == "websocket" else ""
        return format_html("{} connected over the local unix socket{}", _who(user), over)
    if mechanism in MECHANISMS:
        return format_html("{} signed in with {}", _who(user), MECHANISMS[mechanism])
    return format_html("{} signed in", _who(user))


def _failed_sign_in(user: Any, mechanism: str, data: Mapping[str, Any]) -> SafeString:
    named = format_html(" for {}", _text(user)) if user else NOTHING
    if data.get("lockout"):
        return format_html(
            "Account {} locked after {} until {}",
            _who(user),
            _plural(data.get("failures"), "failed sign-in"),
            _when(data.get("locked_until")),
        )
    how = MECHANISMS.get(mechanism) or (_code(mechanism) if mechanism else "")
    with_how = format_html(" with {}", how) if how else NOTHING
    if data.get("api_key_ref"):
        with_how = format_html(" with {}", _api_key(data["api_key_ref"]))
    if data.get("failures_from"):
        window = int(conf.get("SESSIONS_LOGIN_RATE_WINDOW"))
        return format_html(
            "{}{}{} from {} in {} s{}",
            _plural(data.get("count", 1), "failed sign-in attempt"),
            with_how,
            named,
            _text(data["failures_from"]),
            window,
            _because(data),
        )
    if data.get("error") == "abandoned second factor":
        return format_html("{} abandoned a sign-in at the one-time code", _who(user))
    if data.get("method"):
        return format_html(
            "Sign-in attempt{} refused: {} ({})",
            named,
            _text(data.get("error")) or "?",
            _code(data["method"]),
        )
    return format_html("Failed sign-in{}{}{}", with_how, named, _because(data))


# --- LOGOUT and NEW_SIGN_IN ------------------------------------------------------------------------


def _logout(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    session = data.get("target") or row.get("session")
    owner = data.get("target_username") or row.get("username")
    if data.get("note") or not owner:
        why = _text(data.get("note")) or "signed out"
        return format_html("Session {}{} ended: {}", _session(session), _of(owner), why)
    return format_html(
        "{} signed out of session {}", _text(row.get("username")) or _text(owner), _session(session)
    )


def _of(owner: Any) -> SafeString:
    """The words " of bob" after a session, or nothing for a session without a user (a peer node)."""
    return format_html(" of {}", _text(owner)) if owner else NOTHING


def _new_sign_in(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    where = ", ".join(_text(data.get(key)) for key in ("place", "address") if data.get(key))
    at = format_html(" ({})", where) if where else NOTHING
    if data.get("api_key_ref"):
        return format_html(
            "{} of {} used from a new network{}; its owner was notified",
            _api_key(data["api_key_ref"]),
            _who(row.get("username")),
            at,
        )
    return format_html(
        "{} signed in from a new device or network: {}{}; they were notified",
        _who(row.get("username")),
        _text(data.get("device")) or "unknown device",
        at,
    )


# --- METHOD_CALL -----------------------------------------------------------------------------------


def _session_end(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    reason = _text(data.get("end_reason"))
    actor = row.get("username")
    target = data.get("target") or row.get("session")
    owner = data.get("target_username")
    note = _text(data.get("note"))
    if reason == "TERMINATED":
        why = format_html(" (reason: {})", note) if note else NOTHING
        if actor and actor == owner:
            return format_html("{} terminated their session {}{}", _who(actor), _session(target), why)
        return format_html("{} terminated session {}{}{}", _who(actor), _session(target), _of(owner), why)
    kind = "Token session" if data.get("credentials") == "TOKEN" else "Session"
    because = END_REASONS.get(reason) or format_html("{}", reason or "no reason recorded")
    extra = format_html(" ({})", note) if note else NOTHING
    return format_html("{} {}{} ended: {}{}", kind, _session(target), _of(owner), because, extra)


def _selection(selection: Any) -> SafeString:
    """What a bulk termination chose (``selection``): the command's ``filters`` / ``user`` /
    ``ids``, or the dashboard's ``{"page": ..., "filters": ...}`` / ``{"page": ..., "others": true}``
    (``page`` is where it was done: not repeated here)."""
    if not isinstance(selection, Mapping):
        return NOTHING
    chosen = {key: value for key, value in selection.items() if key != "page"}
    if not chosen or chosen == {"others": True}:
        return NOTHING
    if set(chosen) == {"filters"}:
        if not chosen["filters"]:
            return format_html("{}", " (no filters: every active session)")
        return format_html(" matching {}", _code(chosen["filters"]))
    if set(chosen) == {"user"}:
        return format_html(" of {}", _text(chosen["user"]))
    if set(chosen) == {"ids"}:
        ids = chosen["ids"]
        return format_html(" chosen by id ({})", _number(len(ids)) if isinstance(ids, list) else "?")
    return format_html(" matching {}", _code(dict(chosen)))


def _sessions_terminate(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    ended, selected, cascaded = data.get("ended"), data.get("selected"), data.get("cascaded")
    selection = data.get("selection")
    others = isinstance(selection, Mapping) and selection.get("others") is True
    with_them = (
        format_html(", and {} that came from them", _plural(cascaded, "token session"))
        if isinstance(cascaded, int) and cascaded
        else NOTHING
    )
    of = format_html(" (of {} selected)", _number(selected)) if selected not in (None, ended) else ""
    why = format_html(" (reason: {})", _text(data["reason"])) if data.get("reason") else ""
    stopped = "; it stopped part-way" if data.get("completed") is False else ""
    return format_html(
        "{} ended {}{}{}{}{}{}",
        _who(row.get("username")),
        _plural(ended, "other session" if others else "session"),
        _selection(selection),
        with_them,
        of,
        why,
        stopped,
    )


def _sessions_purge(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    done = [
        format_html("{} {}", _number(data[key]), words)
        for key, words in PURGE_COUNTS.items()
        if data.get(key)
    ]
    seconds = data.get("older_than_seconds")
    older = (
        format_html(" older than {} days", _number(seconds // 86400))
        if isinstance(seconds, int) and seconds and seconds % 86400 == 0
        else NOTHING
    )
    what = (
        format_html(": {}", format_html(", ".join(["{}"] * len(done)), *done)) if done else ": nothing to do"
    )
    return format_html(
        "{} purged the history{}{}", _text(row.get("username")) or "The sessions purge", older, what
    )


def _api_key_call(verb: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], SafeString]:
    def sentence(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
        key = _api_key(data.get("api_key") or {})
        details = NOTHING
        if verb == "revoked" and data.get("reason"):
            details = format_html(" (reason: {})", _text(data["reason"]))
        elif verb == "updated":
            changed = [f for f in data.get("fields") or () if f in ("name", "expires_at")]
            words = [{"name": "name", "expires_at": "expiry"}[f] for f in changed]
            if data.get("reset"):
                words.append("a new secret")
            details = format_html(" ({})", ", ".join(words)) if words else details
        if row.get("username"):
            return format_html("{} {} {}{}", _text(row["username"]), verb, key, details)
        return format_html("{} {}{}", key, verb, details)

    return sentence


def _two_factor(done: str, attempt: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], SafeString]:
    def sentence(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
        user = _who(row.get("username"))
        if row.get("success"):
            return format_html("{} {} two-factor authentication", user, done)
        if data.get("throttled"):
            return format_html("{} sent a code too soon after a wrong one while trying to {}", user, attempt)
        if data.get("error"):
            return format_html("{} could not {} ({})", user, attempt, _text(data["error"]))
        return format_html("{} entered a wrong code while trying to {}", user, attempt)

    return sentence


def _set_password(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    actor, target = row.get("username"), data.get("target_username")
    if not target or actor == target:
        return format_html("{} changed their password", _who(actor))
    return format_html("{} set the password of {}", _who(actor), _text(target))


def _generate_token(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    kind = "a single-use token" if data.get("single_use") else "a token"
    ttl = format_html(" valid {} s", _number(data["ttl"])) if data.get("ttl") is not None else ""
    anywhere = ", usable from any address" if data.get("match_origin") is False else ""
    return format_html("{} created {}{}{}", _who(row.get("username")), kind, ttl, anywhere)


def _notice_answer(answer: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], SafeString]:
    def sentence(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
        device = _text(data.get("device")) or "an unknown device"
        user = _who(row.get("username"))
        if answer == "confirm":
            return format_html("{} confirmed that the sign-in from {} was theirs", user, device)
        ended = data.get("ended")
        then = format_html("; {} ended", _plural(ended, "session")) if isinstance(ended, int) else ""
        return format_html("{} reported the sign-in from {} as not theirs{}", user, device, then)

    return sentence


def _known_device_forget(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    actor, target = row.get("username"), data.get("target_username")
    device = _text(data.get("device")) or "a device"
    if actor and actor == target:
        return format_html("{} forgot their device {}", _who(actor), device)
    return format_html("{} forgot the device {} of {}", _who(actor), device, _who(target))


def _two_factor_reset(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    return format_html(
        "{} removed the two-factor device of {}", _who(row.get("username")), _who(data.get("target_username"))
    )


def _onetime_password(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    return format_html(
        "{} issued a one-time password for {}", _who(row.get("username")), _who(data.get("target_username"))
    )


def _unlock_user(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    was = "" if data.get("was_locked", True) else " (it was not locked)"
    return format_html(
        "{} unlocked the account {}{}", _who(row.get("username")), _who(data.get("username")), was
    )


def _field_key_rotate(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    return format_html(
        "{} rotated the field key: {} re-sealed, {} sealed",
        _who(row.get("username")),
        _plural(data.get("resealed", 0), "value"),
        _plural(data.get("sealed", 0), "value"),
    )


_METHODS: Mapping[str, Callable[[Mapping[str, Any], Mapping[str, Any]], SafeString]] = {
    "session.end": _session_end,
    "sessions.terminate": _sessions_terminate,
    "sessions.purge": _sessions_purge,
    "auth.generate_onetime_password": _onetime_password,
    "user.set_password": _set_password,
    "auth.generate_token": _generate_token,
    "auth.unlock_user": _unlock_user,
    "api_key.create": _api_key_call("created"),
    "api_key.update": _api_key_call("updated"),
    "api_key.revoke": _api_key_call("revoked"),
    "api_key.delete": _api_key_call("deleted"),
    "two_factor.start": _two_factor("started setting up", "start setting up two-factor authentication"),
    "two_factor.confirm": _two_factor("turned on", "turn on two-factor authentication"),
    "two_factor.disable": _two_factor("turned off", "turn off two-factor authentication"),
    "two_factor.reset": _two_factor_reset,
    "sign_in_notice.confirm": _notice_answer("confirm"),
    "sign_in_notice.deny": _notice_answer("deny"),
    "known_device.forget": _known_device_forget,
    "field_key.rotate": _field_key_rotate,
}


def _method_call(row: Mapping[str, Any], data: Mapping[str, Any]) -> SafeString:
    method = _text(data.get("method"))
    known = _METHODS.get(method)
    if known is not None:
        return known(row, data)
    if not method:
        return _fallback(row)
    user = row.get("username")
    if row.get("success"):
        return format_html("{} called {}", _who(user), _code(method))
    by = format_html(" by {}", _text(user)) if user else ""
    return format_html("Call of {}{} refused", _code(method), by)


def _fallback(row: Mapping[str, Any]) -> SafeString:
    """Any record: its event in words, by whom, its method, and whether it failed."""
    data = row.get("event_data")
    method = data.get("method") if isinstance(data, Mapping) else None
    event = _text(row.get("event")).replace("_", " ").lower() or "event"
    by = format_html(" by {}", _text(row.get("username"))) if row.get("username") else ""
    call = format_html(": {}", _code(method)) if method else ""
    failed = " (failed)" if row.get("success") is False else ""
    return format_html("{}{}{}{}", event[:1].upper() + event[1:], by, call, failed)


_EVENTS: Mapping[str, Callable[[Mapping[str, Any], Mapping[str, Any]], SafeString]] = {
    "AUTHENTICATION": _authentication,
    "LOGOUT": _logout,
    "NEW_SIGN_IN": _new_sign_in,
    "METHOD_CALL": _method_call,
}


@register.simple_tag
def audit_sentence(row: Mapping[str, Any]) -> SafeString:
    """One plain sentence for an audit record (an ``audit.query`` row), HTML-escaped.

    A record whose ``event_data`` has an unexpected shape (hand-written, from an older release)
    gets the general sentence of `_fallback` rather than an error: the audit page must show every
    record.
    """
    data = row.get("event_data")
    event = _EVENTS.get(_text(row.get("event")))
    if event is None or not isinstance(data, Mapping):
        return _fallback(row)
    try:
        return event(row, data)
    except (TypeError, ValueError, AttributeError, KeyError):
        return _fallback(row)


@register.filter
def audit_json(value: Any) -> str:
    """``event_data`` as compact JSON for the disclosure (escaped by the template)."""
    return json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
