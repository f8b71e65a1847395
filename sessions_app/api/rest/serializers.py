"""Input serializers: the *shape* of request bodies, strictly typed. Outputs are the selectors' rows.

DRF's stock fields coerce (``1`` → ``"1"``, ``"yes"`` → ``True``, ``"5"`` → ``5``); the ``Strict*``
fields accept only the JSON type they name (E4). Every body serializer rejects keys it does not
declare (E6). Rules that need the database or the caller (a unique name, who may act for whom)
belong to the services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from sessions_app.api.rest.schema import EJSON_DATE, JSON_ARRAY_OR_NULL, JSON_OBJECT_OR_NULL

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_DATE_MS = 10**14


class StrictCharField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"oneOf": [EJSON_DATE, {"type": "string", "format": "date-time"}], "nullable": True})
class DateTimeInputField(serializers.Field[dt.datetime, Any, Any, Any]):
    """``{"$date": ms}`` or an ISO-8601 string (no offset: UTC), as JSON-RPC's ``api_key`` methods."""

    default_error_messages = {
        "invalid": 'a datetime ({{"$date": ms}} or ISO-8601) or null is required',
        "range": "date out of range",
    }

    def to_internal_value(self, data: Any) -> dt.datetime:
        if isinstance(data, dict) and set(data) == {"$date"}:
            ms = data["$date"]
            if isinstance(ms, bool) or not isinstance(ms, int):
                self.fail("invalid")
            if abs(ms) > MAX_DATE_MS:
                self.fail("range")
            return EPOCH + dt.timedelta(milliseconds=ms)
        if isinstance(data, str):
            try:
                parsed = dt.datetime.fromisoformat(data)
            except ValueError:
                self.fail("invalid")
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


class StrictSerializer(serializers.Serializer[None]):
    """A body serializer that refuses undeclared keys."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in self.fields]
            if unknown:
                raise serializers.ValidationError({str(key)[:64]: ["unexpected field"] for key in unknown})
        return super().to_internal_value(data)


@extend_schema_field(JSON_ARRAY_OR_NULL)
class QueryFiltersField(serializers.JSONField):
    pass


@extend_schema_field(JSON_OBJECT_OR_NULL)
class QueryOptionsField(serializers.JSONField):
    pass


class QueryInputSerializer(StrictSerializer):
    """``{"query-filters": [...], "query-options": {...}}``; the query language checks the rest."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {
            "query-filters": QueryFiltersField(required=False, allow_null=True),
            "query-options": QueryOptionsField(required=False, allow_null=True),
        }


class LoginInputSerializer(StrictSerializer):
    """``auth.login_ex`` parameters (documentation: `login_ex` validates them, per mechanism)."""

    mechanism = serializers.ChoiceField(
        choices=["PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN", "SCRAM", "NODE_HMAC"]
    )
    username = StrictCharField(required=False)
    password = StrictCharField(required=False)
    api_key = StrictCharField(required=False)
    token = StrictCharField(required=False)
    node = StrictCharField(required=False)
    timestamp = StrictIntegerField(required=False)
    nonce = StrictCharField(required=False)
    signature = StrictCharField(required=False)
    scram_type = serializers.ChoiceField(
        choices=["CLIENT_FIRST_MESSAGE", "CLIENT_FINAL_MESSAGE"],
        required=False,
        help_text="SCRAM: the step (the exchange between them is kept by the pending-login cookie)",
    )
    rfc_str = StrictCharField(required=False, help_text="SCRAM: the RFC 5802 message of this step")
    login_options = serializers.DictField(required=False)


class LoginContinueInputSerializer(StrictSerializer):
    """``auth.login_ex_continue`` parameters (documentation: `login_ex_continue` validates them)."""

    mechanism = serializers.ChoiceField(choices=["OTP_TOKEN"])
    otp_token = StrictCharField()
    login_options = serializers.DictField(required=False)


class TokenInputSerializer(StrictSerializer):
    ttl = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=30 * 86400)
    attrs = serializers.DictField(required=False)
    match_origin = StrictBooleanField(required=False)
    single_use = StrictBooleanField(required=False)


class ApiKeyCreateInputSerializer(StrictSerializer):
    name = StrictCharField(min_length=1, max_length=200)
    username = StrictCharField(required=False, min_length=1, max_length=150)
    expires_at = DateTimeInputField(required=False, allow_null=True)


class ApiKeyUpdateInputSerializer(StrictSerializer):
    name = StrictCharField(required=False, min_length=1, max_length=200)
    expires_at = DateTimeInputField(required=False, allow_null=True)
