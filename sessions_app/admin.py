"""Django admin: sessions, API keys, known devices and audit records, read-mostly.

Nothing here writes a row itself: the change forms are read-only, rows cannot be added or deleted
from the admin (that would skip the cascades and audit records of the services), and the bulk
actions call the same services as the APIs, under the same roles.

Secret columns (`sessions_app.auth.secret_fields`: ``secret_hash``, ``user_auth_hash``, ``key_hash``, the
TOTP device key, the user's password …) are never displayed, filtered, searched or ordered, on any
admin registered on the site, Django's and django-otp's included (`SecretFieldsHiddenAdmin`, applied
to every registered admin by `hide_secret_fields`): a query string that names one, directly or
through relations (``?key__regex=``, ``?user__password__startswith=``, ``?o=key_hash``), is a 400 like
Django's own ``?password__startswith=``. The system check `check_admin_secrets` fails when an admin
declares a secret anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.options import BaseModelAdmin, InlineModelAdmin
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ORDER_VAR
from django.contrib.auth.forms import ReadOnlyPasswordHashField
from django.core import checks
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import targets
from sessions_app.auth.clients import client_from_request
from sessions_app.auth.roles import Role, has_role
from sessions_app.auth.secret_fields import is_secret_path, secret_field_names
from sessions_app.devices.places import Place
from sessions_app.forms import TYPE_THE_NUMBER_ABOVE, BulkTerminateForm
from sessions_app.models import ApiKey, AuditRecord, KnownDevice, UserSession
from sessions_app.services import totp as totp_services
from sessions_app.services.api_keys import api_key_revoke
from sessions_app.services.maintenance import BulkState, sessions_terminate_selection
from sessions_app.services.notices import known_device_forget
from sessions_app.templatetags.registry import ago

_site_has_permission = admin.site.has_permission


def _admin_has_permission(request: HttpRequest) -> bool:
    """The admin is for browser sessions (not per-request API keys), and not for a one-time-password
    session before it has set a new password (the sign-in page sends that one to the password page)."""
    session = getattr(request, "auth_session", None)
    if session is None or session.password_change_required:
        return False
    return bool(_site_has_permission(request))


admin.site.has_permission = _admin_has_permission  # type: ignore[method-assign]  # AdminSite has no hook for it; the default site's check is wrapped once, at import

if TYPE_CHECKING:
    # The stubs' generic parameters (any model: these apply to every registered admin). Django's
    # admin classes cannot be subscripted at run time, so the bases are the plain classes there.
    _BaseModelAdmin = BaseModelAdmin[Model]
    _InlineModelAdmin = InlineModelAdmin[Model, Model]
    _ModelAdmin = admin.ModelAdmin[Model]
else:
    _BaseModelAdmin, _InlineModelAdmin, _ModelAdmin = BaseModelAdmin, InlineModelAdmin, admin.ModelAdmin


def _entry_name(entry: Any) -> str | None:
    """The field path an admin option entry names: ``"-key"`` of ordering, ``"^name"`` of search,
    ``("user", Filter)`` of list_filter; ``None`` for callables, filter classes and expressions."""
    if isinstance(entry, (tuple, list)) and entry:
        entry = entry[0]
    return entry.lstrip("-^=@") if isinstance(entry, str) else None


class _SecretFormFields(_BaseModelAdmin):
    """Change forms (of admins and inlines) without the model's secret columns.

    A secret stays only where its form field is Django's `ReadOnlyPasswordHashField` (the user's
    password: algorithm and a masked prefix, never the hash), Django's own reference behaviour.
    """

    def _hidden(self, name: Any) -> bool:
        path = _entry_name(name)
        if path is None or not is_secret_path(self.model, path):
            return False
        return not isinstance(getattr(self.form, "declared_fields", {}).get(path), ReadOnlyPasswordHashField)

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        exclude = super().get_exclude(request, obj)
        if exclude is None:  # Django then uses the form's Meta.exclude: keep it
            exclude = getattr(getattr(self.form, "_meta", None), "exclude", None) or ()
        secrets = [name for name in secret_field_names(self.model) if self._hidden(name)]
        return [*exclude, *(name for name in secrets if name not in exclude)]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self._visible(super().get_readonly_fields(request, obj))

    def _visible(self, fields: Any) -> list[Any]:
        """``fields`` (names, or tuples of names shown on one line) without the hidden ones."""
        kept: list[Any] = []
        for entry in fields:
            if isinstance(entry, (tuple, list)):
                entry = tuple(name for name in entry if not self._hidden(name))
                if entry:
                    kept.append(entry)
            elif not self._hidden(entry):
                kept.append(entry)
        return kept

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self._visible(super().get_fields(request, obj))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (title, {**options, "fields": self._visible(options.get("fields", ()))})
            for title, options in super().get_fieldsets(request, obj)
        ]


class SecretFieldsHiddenInline(_SecretFormFields, _InlineModelAdmin):
    """Inlines without the secret columns of their model (see `SecretFieldsHiddenAdmin`)."""


class SecretFieldsHiddenAdmin(_SecretFormFields, _ModelAdmin):
    """A ModelAdmin that never displays, filters, searches or orders by a secret column (F5).

    Secret columns are those of `sessions_app.auth.secret_fields`, of the model itself or reached through
    relations. Filtering on one (``?key__regex=``, ``?user__password__startswith=``), ordering by one
    (``?o=key_hash``) or referencing one (``?_to_field=key``) is `DisallowedModelAdminLookup`, a 400;
    the list columns, list filters, search fields, orderings and form fields drop them.
    """

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if is_secret_path(self.model, lookup):
            return False
        return bool(super().lookup_allowed(lookup, value, request))  # type: ignore[arg-type]  # Django 5.2 takes None (then reads list_filter); the stubs follow 6.0

    def to_field_allowed(self, request: HttpRequest, to_field: str) -> bool:
        return not is_secret_path(self.model, to_field) and bool(super().to_field_allowed(request, to_field))

    def _orders_by_secret(self, column: Any) -> bool:
        """A list column that is a secret, or a callable whose ``admin_order_field`` is one."""
        if isinstance(column, str) and is_secret_path(self.model, column):
            return True
        target = column
        if isinstance(column, str):
            target = getattr(self, column, None) or getattr(self.model, column, None)
        target = getattr(target, "fget", target)  # properties
        order_field = getattr(target, "admin_order_field", None)
        return isinstance(order_field, str) and is_secret_path(self.model, order_field)

    def get_list_display(self, request: HttpRequest) -> Any:
        return [c for c in super().get_list_display(request) if not self._orders_by_secret(c)]

    def get_sortable_by(self, request: HttpRequest) -> Any:
        return [c for c in super().get_sortable_by(request) if not self._orders_by_secret(c)]

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [
            f
            for f in super().get_list_filter(request)
            if (name := _entry_name(f)) is None or not is_secret_path(self.model, name)
        ]

    def get_search_fields(self, request: HttpRequest) -> Any:
        return [
            f for f in super().get_search_fields(request) if not is_secret_path(self.model, f.lstrip("^=@"))
        ]

    def get_ordering(self, request: HttpRequest) -> Any:
        return [
            o
            for o in super().get_ordering(request) or ()
            if (name := _entry_name(o)) is None or not is_secret_path(self.model, name)
        ]

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # Django skips an ordering that is not a column number (?o=key_hash); naming a secret is refused.
        for part in request.GET.get(ORDER_VAR, "").split("."):
            if not part.lstrip("-").isdigit() and is_secret_path(self.model, part):
                raise DisallowedModelAdminLookup("Ordering by a secret field is not allowed")
        return super().get_changelist_instance(request)


class ReadOnlyAdmin(SecretFieldsHiddenAdmin):
    """Viewable, searchable, filterable; never added, edited or deleted through the admin."""

    show_full_result_count = False  # no second COUNT(*) over a million rows per page

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SessionStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("ended", "Ended")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "ended":
            return queryset.filter(ended_at__isnull=False)
        return queryset


@admin.register(UserSession)
class UserSessionAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "username",
        "credentials",
        "device",
        "place",
        "secure_transport",
        "internal",
        "created",
        "last_seen",
        "ended",
        "end_reason",
        "ended_by",
    ]
    list_filter = [SessionStatusFilter, "credentials", "internal", "secure_transport", "end_reason"]
    search_fields = ["=public_id", "^username", "^origin", "^api_key_name"]
    ordering = ["-created_at", "-id"]
    list_select_related = False
    fields = [
        "public_id",
        "user",
        "username",
        "credentials",
        "login_at",
        "api_key_id",
        "api_key_name",
        "parent_id",
        "root_credentials",
        "root_username",
        "root_api_key_name",
        "origin",
        "client_address",
        "user_agent",
        "device_label",
        "device_browser",
        "device_os",
        "device_family",
        "location_country",
        "location_city",
        "internal",
        "secure_transport",
        "created_at",
        "last_seen_at",
        "expires_at",
        "idle_timeout",
        "password_change_required",
        "ended_at",
        "end_reason",
        "ended_by",
    ]
    readonly_fields = cast("list[str]", fields)  # the names above, none grouped
    actions = ["terminate_sessions"]

    @admin.display(description="id")
    def short_id(self, obj: UserSession) -> str:
        return f"{obj.public_id[:10]}…"

    # Device and place in words, times relative with the exact time on hover, as on the dashboard.
    # Whatever the client sent is escaped: format_html, or a plain str that the admin escapes.

    @admin.display(description="device", ordering="device_label")
    def device(self, obj: UserSession) -> str:
        label: str | None = obj.device_label
        if not label:
            return "—"
        if not obj.user_agent:
            return label
        return format_html('<span title="{}">{}</span>', obj.user_agent, label)

    @admin.display(description="place", ordering="location_country")
    def place(self, obj: UserSession) -> str:
        where = Place(country=obj.location_country, city=obj.location_city).label
        address: str = obj.client_address or obj.origin
        return format_html("{} · {}", where, address) if where else address

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: UserSession) -> str:
        return ago(obj.created_at)

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, obj: UserSession) -> str:
        return ago(obj.last_seen_at)

    @admin.display(description="ended", ordering="ended_at")
    def ended(self, obj: UserSession) -> str:
        return ago(obj.ended_at) if obj.ended_at is not None else "—"

    def has_terminate_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.AUTH_SESSIONS_WRITE)

    @admin.action(description="Terminate selected sessions", permissions=["terminate"])
    def terminate_sessions(
        self, request: HttpRequest, queryset: QuerySet[UserSession]
    ) -> TemplateResponse | None:
        """Like ``delete_selected``: first a confirmation page (how many are active, which token
        sessions end with them, the number typed above 100), then the dashboard's bulk service; the
        message says what ended and what had ended already. The page fixes the set (``upto``): with
        "select all", sessions that begin after it was shown are not included."""
        confirmed = request.POST.get("post") == "yes"
        form = BulkTerminateForm(request.POST if confirmed else None)
        upto = form.cleaned_data.get("upto") if confirmed and form.is_valid() else None
        if upto is None:
            upto = targets.session_newest_pk()
        pks = tuple(queryset.filter(pk__lte=upto).order_by().values_list("pk", flat=True))
        selection = targets.SessionSelection(pks=pks, upto=upto)
        active = targets.selection_count(selection=selection) if confirmed and form.is_valid() else 0
        if confirmed and form.is_valid() and form.check_count(active):
            state = sessions_terminate_selection(
                selection=selection,
                actor=request.user.get_username(),
                address=client_from_request(request).origin,
                describe={"page": "admin", "rows": len(pks)},
                selected=form.cleaned_data["expected"],
            )
            text, level = _terminated_message(state, already=len(pks) - active)
            self.message_user(request, text, level)
            return None
        plan = targets.selection_plan(selection=selection)
        shown = queryset.filter(pk__in=pks[:SHOWN_ROWS]).order_by("-created_at", "-id")
        context = {
            **self.admin_site.each_context(request),
            "title": "Terminate the selected sessions?",
            "subtitle": None,
            "opts": self.model._meta,
            "plan": plan,
            "already": len(pks) - plan.count,
            "rows": shown,
            "more": max(0, len(pks) - SHOWN_ROWS),
            "selected": len(pks),
            "upto": upto,
            "form": form,
            "needs_typing": plan.count > TYPE_THE_NUMBER_ABOVE,
            "posted_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/sessions_app/usersession/terminate_selected_confirmation.html", context
        )


#: Selected sessions listed on the admin's confirmation page (the rest are counted).
SHOWN_ROWS = 100


def _terminated_message(state: BulkState, *, already: int) -> tuple[str, int]:
    """The action's message, e.g. "3 terminated; 2 had already ended.", and its level."""
    if not state.ended and not state.cascaded:
        if already:
            return f"None terminated: {_sessions(already)} had already ended.", messages.WARNING
        return "None terminated: no session was selected.", messages.WARNING
    text = f"{state.ended:,} terminated"
    if state.cascaded:
        text += f", and {_sessions(state.cascaded, 'token session')} that came from them"
    if already:
        text += f"; {already:,} had already ended"
    return f"{text}.", messages.SUCCESS


def _sessions(n: int, noun: str = "session") -> str:
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "id", "user", "created_at", "expires_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "user__username"]
    ordering = ["-created_at"]
    list_select_related = ["user"]
    fields = ["name", "user", "created_at", "expires_at", "last_used_at", "revoked", "revoked_reason"]
    readonly_fields = cast("list[str]", fields)  # the names above, none grouped
    actions = ["revoke_keys"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.API_KEY_WRITE)

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        address = client_from_request(request).origin
        keys = list(queryset.filter(revoked=False))
        for key in keys:
            api_key_revoke(
                key=key, reason="Revoked in the admin", actor=request.user.get_username(), address=address
            )
        self.message_user(request, f"{len(keys)} API key(s) revoked.", messages.SUCCESS)


@admin.register(KnownDevice)
class KnownDeviceAdmin(ReadOnlyAdmin):
    """The devices and networks each user signed in from (new-sign-in notices): viewable per user;
    forgotten (audited; the next sign-in from one is reported again) with ``AUTH_SESSIONS_WRITE``."""

    list_display = ["user", "label", "place", "network", "first_seen_at", "last_seen_at", "confirmed"]
    list_filter = ["confirmed", ("user", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["user__username", "label", "place", "network"]
    ordering = ["-last_seen_at", "-id"]
    list_select_related = ["user"]
    fields = ["user", "label", "signature", "place", "network", "first_seen_at", "last_seen_at", "confirmed"]
    readonly_fields = cast("list[str]", fields)  # the names above, none grouped
    actions = ["forget_devices"]

    def has_forget_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.AUTH_SESSIONS_WRITE)

    @admin.action(description="Forget selected devices", permissions=["forget"])
    def forget_devices(self, request: HttpRequest, queryset: QuerySet[KnownDevice]) -> None:
        client = client_from_request(request)
        devices = list(queryset.select_related("user"))
        for device in devices:
            known_device_forget(device=device, actor=request.user.get_username(), client=client)
        self.message_user(request, f"{len(devices)} device(s) forgotten.", messages.SUCCESS)


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ["timestamp", "event", "username", "success", "address", "session"]
    list_filter = ["event", "success"]
    search_fields = ["^username", "^address", "=session", "=audit_id"]
    ordering = ["-timestamp", "-id"]
    fields = ["audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data"]
    readonly_fields = cast("list[str]", fields)  # the names above, none grouped


# django-otp's own TOTPDevice admin shows the device key and a QR code of it; this one never does.
if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(SecretFieldsHiddenAdmin):
    """Second-factor devices: viewable and removable (removing one ends its user's sessions)."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username", "name"]
    list_select_related = ["user"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at", "digits", "step"]
    readonly_fields = cast("list[str]", fields)  # the names above, none grouped

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: TOTPDevice) -> None:
        self.delete_queryset(request, TOTPDevice.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        """An administrator's reset of second factors: audited (security.md F2), sessions end."""
        totp_services.totp_devices_reset(
            devices=list(queryset.select_related("user")),
            actor=request.user.get_username(),
            client=client_from_request(request),
        )


def _protected(cls: type[Any], base: type[Any]) -> type[Any]:
    """``cls`` derived from ``base`` too, with its inlines derived from `SecretFieldsHiddenInline`
    (``cls`` itself when it has both already)."""
    attrs: dict[str, Any] = {"__module__": cls.__module__, "__doc__": cls.__doc__}
    if issubclass(cls, admin.ModelAdmin):
        attrs["inlines"] = [_protected(inline, SecretFieldsHiddenInline) for inline in cls.inlines]
        if issubclass(cls, base) and attrs["inlines"] == list(cls.inlines):
            return cls
    elif issubclass(cls, base):
        return cls
    return type(cls.__name__, (cls,) if issubclass(cls, base) else (base, cls), attrs)


def hide_secret_fields(site: admin.AdminSite) -> None:
    """Give every admin registered on ``site`` (Django's User admin, django-otp's device admins …)
    the `SecretFieldsHiddenAdmin` behaviour, and their inlines `SecretFieldsHiddenInline`'s."""
    for model, model_admin in list(site._registry.items()):
        protected = _protected(type(model_admin), SecretFieldsHiddenAdmin)
        if protected is not type(model_admin):
            site.unregister(model)
            site.register(model, protected)


# Installed apps register their admins before this one (sessions_app comes last): all are covered.
hide_secret_fields(admin.site)

#: Admin options whose entries name a field that the admin displays, filters, searches or orders by.
_EXPOSING_OPTIONS = (
    "list_display",
    "list_display_links",
    "list_editable",
    "list_filter",
    "search_fields",
    "ordering",
    "sortable_by",
    "readonly_fields",
    "fields",
)
#: Lookups that must be refused on every secret reachable from a registered model.
_PROBES = ("", "__startswith", "__regex")


def _declared_exposures(model_admin: BaseModelAdmin[Model]) -> list[str]:
    """``"option: name"`` for every secret an admin's or inline's options name (masked ones aside)."""
    model = model_admin.model
    declared: dict[str, Any] = {
        option: getattr(model_admin, option, None) or () for option in _EXPOSING_OPTIONS
    }
    declared["fieldsets"] = flatten_fieldsets(model_admin.fieldsets or ())
    hierarchy = getattr(model_admin, "date_hierarchy", None)  # a ModelAdmin option, not an inline's
    declared["date_hierarchy"] = [hierarchy] if hierarchy else []
    masked = {
        name
        for name, field in getattr(model_admin.form, "declared_fields", {}).items()
        if isinstance(field, ReadOnlyPasswordHashField)
    }
    found = [
        f"{option}: {name}"
        for option, entries in declared.items()
        for name in map(_entry_name, entries)
        if name is not None and name not in masked and is_secret_path(model, name)
    ]
    if (
        not isinstance(model_admin, _SecretFormFields)
        and not model_admin.fields
        and not model_admin.fieldsets
    ):
        shown = set(secret_field_names(model)) - set(model_admin.exclude or ()) - masked
        found += [f"change form (every field by default): {name}" for name in sorted(shown)]
    return found


def _secret_probe_paths(model: type[Model]) -> list[str]:
    """The model's secret columns and those one relation away (``user__password``, ``api_key__key_hash``)."""
    paths = sorted(secret_field_names(model))
    for field in model._meta.get_fields():
        related = field.related_model if field.is_relation else None
        if related is not None and not isinstance(related, str):
            paths += [f"{field.name}__{name}" for name in sorted(secret_field_names(related))]
    return paths


def check_admin_secrets(
    app_configs: Any = None, site: admin.AdminSite | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """System check (``sessions_app.E101``): no registered admin or inline exposes a secret column."""
    errors: list[checks.CheckMessage] = []
    request = HttpRequest()
    for model, model_admin in (site or admin.site)._registry.items():
        problems = _declared_exposures(model_admin)
        for inline in model_admin.inlines:
            problems += [
                f"inline {inline.__name__} {p}"
                for p in _declared_exposures(inline(model, model_admin.admin_site))
            ]
        problems += [
            f"lookup allowed: {path}{probe}"
            for path in _secret_probe_paths(model)
            for probe in _PROBES
            if model_admin.lookup_allowed(path + probe, "a", request)
        ]
        errors += [
            checks.Error(
                f"{type(model_admin).__name__} of {model._meta.label} exposes a secret field ({problem}).",
                hint="Derive it from sessions_app.admin.SecretFieldsHiddenAdmin and leave secret fields out.",
                obj=type(model_admin),
                id="sessions_app.E101",
            )
            for problem in problems
        ]
    return errors
