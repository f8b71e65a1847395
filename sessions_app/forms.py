"""Browser forms: shape validation only; the services and selectors decide.

The filter forms turn their fields into query-filters (the same language as ``auth.sessions`` and
``audit.query``) and map a `QueryError` of the query back onto the field that caused it, so every
mistake is reported next to the field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, cast

from django import forms
from django.utils import timezone

from sessions_app.models import AuditEvent, Credentials
from sessions_app.query import QueryError
from sessions_app.services.api_keys import api_key_expiry_problem

MAX_RAW_FILTERS = 10_000  # characters of the raw query-filters box


class SignInForm(forms.Form):
    username = forms.CharField(
        max_length=150,
        strip=False,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    password = forms.CharField(
        max_length=1024, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class OtpForm(forms.Form):
    otp_token = forms.RegexField(
        regex=r"^[0-9]{6,8}$",
        max_length=8,
        label="Authentication code",
        error_messages={"invalid": "Enter the 6-digit code from your authenticator app."},
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
                "class": "code",
            }
        ),
    )


# --- filters ------------------------------------------------------------------------------------------

_YES_NO = [("", "Any"), ("yes", "Yes"), ("no", "No")]
_WHERE = re.compile(r"^filters\[(\d+)\]")


class QueryFilterForm(forms.Form):
    """Common part of the filter forms: the raw query-filters box, sorting and the page cursor.

    Subclasses list in `built_fields` which form field produced each built filter (in order).
    """

    query = forms.CharField(
        required=False,
        max_length=MAX_RAW_FILTERS,
        label="Query-filters (JSON)",
        help_text='Added to the fields above, e.g. [["origin", "^", "10.0."]].',
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
    )
    sort = forms.CharField(required=False, max_length=32, widget=forms.HiddenInput)
    dir = forms.ChoiceField(
        required=False, choices=[("", ""), ("asc", "asc"), ("desc", "desc")], widget=forms.HiddenInput
    )
    cursor = forms.CharField(required=False, max_length=2048, widget=forms.HiddenInput)
    back = forms.BooleanField(required=False, widget=forms.HiddenInput)

    default_sort = "created"
    sorts: tuple[str, ...] = ()
    #: Columns whose natural order is newest first (times); the others (names, types, origins)
    #: sort A to Z on a first click and without an explicit ``dir``.
    newest_first: frozenset[str] = frozenset({"created", "last_seen", "ended", "time"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.built_fields: list[str] = []

    def clean_query(self) -> list[Any]:
        text = self.cleaned_data["query"].strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
            ) from None
        if not isinstance(value, list):
            raise forms.ValidationError('Query-filters are a JSON array, e.g. [["field", "=", "value"]].')
        return value

    def clean_sort(self) -> str:
        sort = self.cleaned_data["sort"] or self.default_sort
        if sort not in self.sorts:
            raise forms.ValidationError("Not a sortable column.")
        return sort

    def build(self) -> list[Any]:
        """The query-filters of the form fields (subclasses), without the raw box."""
        return []

    def filters(self) -> list[Any]:
        built = self.build()
        return [*built, *self.cleaned_data.get("query", [])]

    def first_descending(self, sort: str) -> bool:
        """The direction of a first click on column ``sort``: newest first for times, else A to Z."""
        return sort in self.newest_first

    def descending(self) -> bool:
        direction = self.cleaned_data.get("dir")
        if direction in ("asc", "desc"):
            return bool(direction == "desc")
        return self.first_descending(self.cleaned_data.get("sort") or self.default_sort)

    def add_query_error(self, exc: QueryError) -> None:
        """Put ``exc`` next to the field whose filter it names (the raw box, or a built field)."""
        if exc.attribute == "cursor":
            self.add_error(None, exc.message)
            return
        if exc.attribute == "sort":
            self.add_error(None, f"Sort: {exc.message}")
            return
        match = _WHERE.match(exc.attribute)
        if match is not None:
            index = int(match.group(1))
            if index < len(self.built_fields):
                self.add_error(self.built_fields[index], exc.message)
                return
            where = f"filters[{index - len(self.built_fields)}]" + exc.attribute[match.end() :]
            self.add_error("query", f"{where}: {exc.message}")
            return
        self.add_error("query", f"{exc.attribute}: {exc.message}" if exc.attribute else exc.message)


def _yes_no(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


#: The user filter's words on every page: it is a case-insensitive prefix (``C^``), so that part
#: of a name finds it ("demo_a" finds Demo_Alice).
USER_PREFIX_HELP = "Starts with, any case."


class SessionFilterForm(QueryFilterForm):
    """The dashboard's filters: they build ``auth.sessions`` query-filters.

    The user filter is ``["credentials_data.username", "C^", ...]``: an index range scan on the
    casefolded name (`specs`), never a scan of every session.
    """

    user = forms.CharField(required=False, max_length=150, label="User", help_text=USER_PREFIX_HELP)
    type = forms.ChoiceField(
        required=False, label="Credential type", choices=[("", "Any"), *Credentials.choices]
    )
    internal = forms.ChoiceField(required=False, label="Internal", choices=_YES_NO)
    origin = forms.CharField(
        required=False, max_length=255, label="Origin starts with", widget=forms.TextInput()
    )
    since = forms.DateTimeField(
        required=False,
        label="Created since (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )

    field_order = ["user", "type", "internal", "origin", "since", "query"]
    sorts = ("created", "last_seen", "user", "type", "origin")

    def build(self) -> list[Any]:
        data = self.cleaned_data
        filters: list[Any] = []
        self.built_fields = []

        def add(field: str, item: list[Any]) -> None:
            filters.append(item)
            self.built_fields.append(field)

        if data.get("user"):
            add("user", ["credentials_data.username", "C^", data["user"]])
        if data.get("type"):
            add("type", ["credentials", "=", data["type"]])
        if _yes_no(data.get("internal", "")) is not None:
            add("internal", ["internal", "=", _yes_no(data["internal"])])
        if data.get("origin"):
            add("origin", ["origin", "^", data["origin"]])
        if data.get("since"):
            add("since", ["created_at", ">=", data["since"]])
        return filters


class SessionHistoryFilterForm(SessionFilterForm):
    """The History tab: the same filters plus the end reason; newest ended first."""

    reason = forms.ChoiceField(required=False, label="End reason", choices=[("", "Any")])
    default_sort = "ended"
    sorts = ("ended", "created", "user", "type", "origin")
    field_order = ["user", "type", "reason", "origin", "since", "query"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from sessions_app.models import EndReason

        super().__init__(*args, **kwargs)
        # The `reason` field declared above, a ChoiceField.
        cast(forms.ChoiceField, self.fields["reason"]).choices = [("", "Any"), *EndReason.choices]
        del self.fields["internal"]

    def build(self) -> list[Any]:
        filters = super().build()
        if self.cleaned_data.get("reason"):
            filters.append(["end_reason", "=", self.cleaned_data["reason"]])
            self.built_fields.append("reason")
        return filters


class AuditFilterForm(QueryFilterForm):
    """The audit page's filters: they build ``audit.query`` query-filters.

    The user filter is ``["username", "C^", ...]``, run as index range scans by
    `tables.audit_page` (the audit table keeps no casefolded copy of the name).
    """

    user = forms.CharField(required=False, max_length=150, label="User", help_text=USER_PREFIX_HELP)
    event = forms.ChoiceField(required=False, label="Event", choices=[("", "Any"), *AuditEvent.choices])
    success = forms.ChoiceField(required=False, label="Succeeded", choices=_YES_NO)
    address = forms.CharField(required=False, max_length=255, label="Address starts with")
    since = forms.DateTimeField(
        required=False,
        label="Since (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )

    field_order = ["user", "event", "success", "address", "since", "query"]
    default_sort = "time"
    sorts = ("time", "user", "event")

    def build(self) -> list[Any]:
        data = self.cleaned_data
        filters: list[Any] = []
        self.built_fields = []
        pairs = [
            ("user", ["username", "C^", data.get("user")] if data.get("user") else None),
            ("event", ["event", "=", data.get("event")] if data.get("event") else None),
            ("success", ["success", "=", _yes_no(data.get("success", ""))]),
            ("address", ["address", "^", data.get("address")] if data.get("address") else None),
            ("since", ["timestamp", ">=", data.get("since")] if data.get("since") else None),
        ]
        for field, item in pairs:
            if item is not None and item[2] is not None:
                filters.append(item)
                self.built_fields.append(field)
        return filters


# --- confirmations and account forms ------------------------------------------------------------------


class ConfirmForm(forms.Form):
    """The explicit confirmation every destructive POST carries (a bare POST only asks again)."""

    confirm = forms.BooleanField(
        required=True,
        widget=forms.HiddenInput,
        error_messages={"required": "Confirm the action with the button below."},
    )


class SessionTerminateForm(ConfirmForm):
    pass


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, label="Name", help_text="Unique per owner; e.g. backup-script.")
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (UTC)",
        help_text="Empty: never.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )
    username = forms.CharField(
        required=False,
        max_length=150,
        label="For user",
        help_text="Empty: yourself. Needs API_KEY_WRITE for anyone else.",
    )

    def __init__(self, *args: Any, can_choose_user: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not can_choose_user:
            del self.fields["username"]

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if "\x00" in name:
            raise forms.ValidationError("The name cannot contain NUL characters.")
        return name

    def clean_expires_at(self) -> dt.datetime | None:
        # Here, before the step-up is asked, as well as in the service: a key that expired before it
        # was made could never be used.
        return _future_expiry(self.cleaned_data["expires_at"])


def _future_expiry(
    expires_at: dt.datetime | None, *, current: dt.datetime | None = None, hint: str = ""
) -> dt.datetime | None:
    """``expires_at`` if a key may be given it (`api_key_expiry_problem`), else a field error."""
    problem = api_key_expiry_problem(expires_at, now=timezone.now(), current=current)
    if problem is not None:
        raise forms.ValidationError(f"{problem[:1].upper()}{problem[1:]}.{hint}")
    return expires_at


class ApiKeyUpdateForm(forms.Form):
    """Rename a key or change its expiry: a new expiry must be in the future; the stored one, even
    if it has passed, may be sent back unchanged (renaming an expired key)."""

    name = forms.CharField(max_length=200, label="Name")
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (UTC)",
        help_text="Empty: never. To stop the key now, revoke it.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}),
    )

    def __init__(self, *args: Any, current_expiry: dt.datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current_expiry = current_expiry

    def clean_expires_at(self) -> dt.datetime | None:
        return _future_expiry(
            self.cleaned_data["expires_at"],
            current=self.current_expiry,
            hint=" To stop the key now, revoke it.",
        )


class ApiKeyRevokeForm(ConfirmForm):
    reason = forms.CharField(max_length=200, label="Reason", initial="Revoked from the browser")


class TotpConfirmForm(forms.Form):
    otp_token = forms.RegexField(
        regex=r"^[0-9]{6,8}$",
        max_length=8,
        label="Code from the app",
        error_messages={"invalid": "Enter the 6-digit code your authenticator app shows."},
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "class": "code"}
        ),
    )


class PasswordConfirmForm(forms.Form):
    """Step-up (security.md F2): the password again and, when the account has a second factor, a
    current code from the app (``second_factor=False`` leaves the code field out)."""

    password = forms.CharField(
        max_length=1024,
        strip=False,
        label="Your password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    otp_token = TotpConfirmForm.base_fields["otp_token"]

    def __init__(self, *args: Any, second_factor: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not second_factor:
            del self.fields["otp_token"]


class PasswordChangeForm(forms.Form):
    """A new password, twice. ``current`` asks for the present password too (a voluntary change;
    after a one-time password it is not asked). Shapes only: the service checks the current password
    first, as a login (security.md F1), then the two new ones and Django's password validators."""

    current_password = forms.CharField(
        max_length=1024,
        strip=False,
        label="Current password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    new_password1 = forms.CharField(
        max_length=1024,
        strip=False,
        label="New password",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    new_password2 = forms.CharField(
        max_length=1024,
        strip=False,
        label="New password again",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, current: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not current:
            del self.fields["current_password"]


# --- bulk terminations (issue 17) ------------------------------------------------------------------------

#: Above this many sessions, a bulk termination is confirmed by typing their number.
TYPE_THE_NUMBER_ABOVE = 100
#: Thousands separators a typed number may contain ("10,760", "10 760", "10.760", "10'760").
_SEPARATORS = re.compile(r"[\s,.'_\u00a0\u202f]")
#: The most sessions one batch request of the dashboard's JavaScript may ask to end.
MAX_STEP_SIZE = 5000


class BulkTerminateForm(ConfirmForm):
    """The confirmation of a bulk termination: ``upto`` fixes the set (the newest session when the
    page was shown; later ones are never included) and ``expected`` is the number the page showed.
    Above `TYPE_THE_NUMBER_ABOVE` that number must be typed (``typed``); a missing or different
    number is an error on that field (the dashboard's pages and the admin's action alike).

    The view also calls `check_count` with the number selected now, so that the rule holds for a
    form posted without ``expected`` (or with a smaller one) too; without ``upto`` the set is the
    one at the time of the POST."""

    upto = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    expected = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    typed = forms.CharField(
        required=False,
        max_length=32,
        label="Type the number of sessions to confirm",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off", "spellcheck": "false"}),
    )

    def clean_typed(self) -> int | None:
        text = _SEPARATORS.sub("", self.cleaned_data["typed"])
        if not text:
            return None
        if not text.isascii() or not text.isdigit():
            raise forms.ValidationError("Type the number in digits, e.g. 1234.")
        return int(text)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("expected") is not None:
            self._check_typed(data["expected"])
        return data

    def _check_typed(self, expected: int) -> None:
        if expected <= TYPE_THE_NUMBER_ABOVE or "typed" in self.errors:
            return
        typed = self.cleaned_data.get("typed")
        if typed is None:
            self.add_error("typed", f"Type {expected:,} (the number of sessions) to confirm.")
        elif typed != expected:
            self.add_error("typed", f"That is not {expected:,}: type the number of sessions shown.")

    def check_count(self, count: int) -> bool:
        """Check a valid form against ``count``, the sessions selected now: without ``expected``
        that is the number to type; above the number shown (a changed page), the page must be seen
        again. Returns whether the form is still valid (errors are added to it)."""
        expected = self.cleaned_data.get("expected")
        if expected is None:
            self.cleaned_data["expected"] = count
            self._check_typed(count)
        elif count > expected:
            self.add_error(
                None, f"{count:,} sessions are selected now, more than the {expected:,} shown: check again."
            )
        return not self.errors


class BulkStepForm(forms.Form):
    """One request of the dashboard's batch-by-batch mode (JavaScript): how many sessions it may end
    at most, and the progress the previous request returned (signed; the view checks it)."""

    size = forms.IntegerField(required=False, min_value=1, max_value=MAX_STEP_SIZE)
    state = forms.CharField(required=False, max_length=2000)
