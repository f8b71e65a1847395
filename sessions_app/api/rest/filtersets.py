"""Query parameters → query-filters / query-options, through django-filter ``FilterSet`` classes.

A `QueryFilterSet` is the allow-list and the value coercer of one query method's GET parameters;
it never filters a queryset itself. It is built from the method's declared fields (`specs`):

* ``field=value`` and ``field__<op>=value`` for every scalar field, with ``op`` one of `OPERATORS`
  (``eq neq gt gte lt lte regex in nin rin rnin startswith nstartswith endswith nendswith``) as the
  field's type allows, plus an ``i`` prefix for the case-insensitive ``C`` variants of string
  fields: ``credentials_data.username__ieq=Alice`` → ``["credentials_data.username", "C=", "Alice"]``;
* values are typed by the field: ``true``/``false``, integers, ISO-8601 datetimes (no offset means
  UTC), strings as given; ``in``/``nin`` take comma-separated lists. A null cannot be written as a
  query parameter: use the POST query endpoints for that (and for ``OR``);
* options: ``order_by`` (comma-separated, ``-`` prefix), ``limit``, ``offset``, ``count=true``, and
  per method switches of ``options.extra``: for sessions ``history=true`` (ended sessions too) and
  ``device=true`` (the ``device`` and ``location`` objects, whose fields are then parameters like
  any other: ``device.os=iOS``, ``location.country__in=Germany,France``, ``order_by=device.browser``).
  A field of a switch that is not on is the query language's "unknown field" 400.

Every problem is a 400 naming the parameter: a parameter given twice (C21), an unknown parameter
(never ignored, unlike django-filter's default), a value of the wrong type. Errors the query
language finds later (``limit`` above 10000, an ordering of an unorderable field...) are renamed to
the parameter that produced them by `ParamQuery.parameter_for`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import django_filters
from django import forms
from django.db.models import Model
from django.http import QueryDict
from django_filters.filters import BaseCSVFilter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from sessions_app.models import ApiKey, AuditRecord, UserSession
from sessions_app.query.schema import FieldType, Schema
from sessions_app.specs import API_KEY_SCHEMA, AUDIT_SCHEMA, SESSION_HISTORY_DEVICE_SCHEMA

#: Query-parameter operator suffix → query-language operator.
OPERATORS: Mapping[str, str] = MappingProxyType(
    {
        "eq": "=",
        "neq": "!=",
        "gt": ">",
        "gte": ">=",
        "lt": "<",
        "lte": "<=",
        "regex": "~",
        "in": "in",
        "nin": "nin",
        "rin": "rin",
        "rnin": "rnin",
        "startswith": "^",
        "nstartswith": "!^",
        "endswith": "$",
        "nendswith": "!$",
    }
)
#: Prefix of the case-insensitive variants (``ieq`` → ``C=``); string fields only.
CASEFOLD_PREFIX = "i"
LIST_OPERATORS = frozenset({"in", "nin"})
_COMPARISONS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "nin")
#: The suffixes each field type accepts (what `query.schema.check` allows for it).
SUFFIXES_BY_TYPE: Mapping[FieldType, tuple[str, ...]] = MappingProxyType(
    {
        FieldType.STRING: tuple(OPERATORS) + tuple(CASEFOLD_PREFIX + op for op in OPERATORS),
        FieldType.INTEGER: _COMPARISONS,
        FieldType.BOOLEAN: _COMPARISONS,
        FieldType.DATETIME: _COMPARISONS,
    }
)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# --- form fields: strict value types ----------------------------------------------------------------


class StrictBooleanField(forms.Field):
    """``true`` / ``false`` only (django-filter's boolean turns anything else into "no filter")."""

    def to_python(self, value: Any) -> bool:
        text = str(value).strip().lower() if value is not None else ""
        if text == "true":
            return True
        if text == "false":
            return False
        raise forms.ValidationError("must be true or false", code="invalid")


class StrictIntegerField(forms.IntegerField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", INT64_MIN)
        kwargs.setdefault("max_value", INT64_MAX)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> int | None:
        text = str(value).strip() if value is not None else ""
        if not re.fullmatch(r"[+-]?[0-9]{1,19}", text):
            raise forms.ValidationError("must be an integer", code="invalid")
        return int(text)


class IsoDateTimeField(forms.Field):
    """ISO-8601 (``datetime.fromisoformat``); no offset means UTC, as in the query language."""

    def to_python(self, value: Any) -> dt.datetime:
        text = str(value).strip() if value is not None else ""
        try:
            parsed = dt.datetime.fromisoformat(text)
            return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise forms.ValidationError(
                "must be an ISO-8601 date and time, e.g. 2026-11-01T00:00:00Z", code="invalid"
            ) from None


class StringField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        kwargs["required"] = False  # "" is a string like any other
        super().__init__(**kwargs)


# --- filters ----------------------------------------------------------------------------------------


class QueryParameter(django_filters.Filter):
    """One allowed query parameter. It types the value; it never filters a queryset itself."""

    def filter(self, qs: Any, value: Any) -> Any:
        raise TypeError("query parameters are compiled by the query language, not by django-filter")


class LeafParameter(QueryParameter):
    """``<path>`` / ``<path>__<op>``: the leaf ``[path, operator, value]``."""

    def __init__(self, *, path: str, operator: str, kind: FieldType, **kwargs: Any) -> None:
        self.path, self.operator, self.kind = path, operator, kind
        kwargs.setdefault("required", kind is not FieldType.STRING)
        super().__init__(field_name=path, lookup_expr=operator, **kwargs)


class StringParameter(LeafParameter):
    field_class = StringField


class IntegerParameter(LeafParameter):
    field_class = StrictIntegerField


class BooleanParameter(LeafParameter):
    field_class = StrictBooleanField


class DateTimeParameter(LeafParameter):
    field_class = IsoDateTimeField


class StringListParameter(BaseCSVFilter, StringParameter):
    pass


class IntegerListParameter(BaseCSVFilter, IntegerParameter):
    pass


class BooleanListParameter(BaseCSVFilter, BooleanParameter):
    pass


class DateTimeListParameter(BaseCSVFilter, DateTimeParameter):
    pass


_PARAMETER_CLASSES: Mapping[tuple[FieldType, bool], type[LeafParameter]] = MappingProxyType(
    {
        (FieldType.STRING, False): StringParameter,
        (FieldType.STRING, True): StringListParameter,
        (FieldType.INTEGER, False): IntegerParameter,
        (FieldType.INTEGER, True): IntegerListParameter,
        (FieldType.BOOLEAN, False): BooleanParameter,
        (FieldType.BOOLEAN, True): BooleanListParameter,
        (FieldType.DATETIME, False): DateTimeParameter,
        (FieldType.DATETIME, True): DateTimeListParameter,
    }
)


class OptionParameter(QueryParameter):
    """A query-option parameter; ``option`` is its key (``extra.<name>`` for extra switches)."""

    def __init__(self, *, option: str, **kwargs: Any) -> None:
        self.option = option
        kwargs.setdefault("required", True)
        super().__init__(field_name=option, **kwargs)


class OrderByParameter(BaseCSVFilter, OptionParameter):
    field_class = forms.CharField


class IntegerOptionParameter(OptionParameter):
    field_class = StrictIntegerField


class BooleanOptionParameter(OptionParameter):
    field_class = StrictBooleanField


# --- the filterset ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamQuery:
    """Query parameters as the query language's ``filters`` and ``options``."""

    filters: list[list[Any]]
    options: dict[str, Any]
    #: The parameter that produced each filter (``filters[i]`` → ``sources[i]``).
    sources: list[str] = field(default_factory=list)

    @property
    def paginated(self) -> bool:
        """A ``limit`` was given (and no ``count``): answer with ``count/next/previous/results``."""
        return "limit" in self.options and not self.options.get("count")

    def count_options(self) -> dict[str, Any]:
        return {"count": True, **({"extra": self.options["extra"]} if "extra" in self.options else {})}

    def parameter_for(self, attribute: str) -> str:
        """The query parameter behind a query-language error attribute (``filters[2][2]``...)."""
        found = re.match(r"filters\[(\d+)\]", attribute)
        if found and int(found.group(1)) < len(self.sources):
            return self.sources[int(found.group(1))]
        found = re.match(r"options\.(?:extra\.)?([A-Za-z_]+)", attribute)
        if found:
            return found.group(1)
        return attribute


class QueryFilterSet(django_filters.FilterSet):
    """Base of the per-method filtersets built by `filterset_for`."""

    #: Every declared parameter by name (django-filter's metaclass sets it on each class).
    base_filters: dict[str, QueryParameter]

    def __init__(self, data: QueryDict, *, request: Request | None = None) -> None:
        # Only the filters named in the request are copied and turned into form fields: a method
        # declares hundreds of (field, operator) parameters.
        self.base_filters = {name: f for name, f in type(self).base_filters.items() if name in data}
        super().__init__(data, queryset=self._meta.model._default_manager.none(), request=request)

    def query(self) -> ParamQuery:
        """Validate the parameters and return the query; raises ``ValidationError`` (400)."""
        declared = type(self).base_filters
        errors: dict[str, list[str]] = {}
        for name, values in self.data.lists():
            if len(values) > 1:
                errors[name] = ["given more than once"]
            elif name not in declared:
                errors[name] = ["unknown query parameter"]
        if errors:
            raise ValidationError(errors)
        if not self.form.is_valid():
            raise ValidationError({name: list(messages) for name, messages in self.form.errors.items()})
        filters: list[list[Any]] = []
        sources: list[str] = []
        options: dict[str, Any] = {}
        for name in self.data:
            parameter, value = self.filters[name], self.form.cleaned_data[name]
            if isinstance(parameter, LeafParameter):
                filters.append([parameter.path, parameter.operator, value])
                sources.append(name)
            else:
                assert isinstance(parameter, OptionParameter)
                if parameter.option.startswith("extra."):
                    options.setdefault("extra", {})[parameter.option[len("extra.") :]] = value
                else:
                    options[parameter.option] = value
        return ParamQuery(filters, options, sources)


def parameter_name(path: str, suffix: str) -> str:
    return path if suffix == "" else f"{path}__{suffix}"


def _leaf_parameters(schema: Schema) -> dict[str, LeafParameter]:
    out: dict[str, LeafParameter] = {}
    for segments, declared in schema.fields.items():
        suffixes = SUFFIXES_BY_TYPE.get(declared.type)
        if suffixes is None:
            continue  # objects: not expressible as one query parameter
        path = ".".join(segments)
        for suffix in ("", *suffixes):
            base = suffix[len(CASEFOLD_PREFIX) :] if suffix not in OPERATORS and suffix else suffix
            op = OPERATORS[base or "eq"]
            operator = f"C{op}" if base != suffix else op
            many = base in LIST_OPERATORS
            cls = _PARAMETER_CLASSES[(declared.type, many)]
            out[parameter_name(path, suffix)] = cls(path=path, operator=operator, kind=declared.type)
    return out


def filterset_for(
    name: str, model: type[Model], schema: Schema, *, extra: Mapping[str, str] | None = None
) -> type[QueryFilterSet]:
    """A `QueryFilterSet` class for a query method's declared ``schema``.

    ``extra`` maps further boolean parameters onto ``options.extra`` keys (``{"history": "history"}``).
    ``schema`` is the method's widest schema (every switch on): the query language refuses a field
    whose switch is off, with the same error a JSON-RPC caller gets.
    """
    attrs: dict[str, Any] = dict(_leaf_parameters(schema))
    attrs["order_by"] = OrderByParameter(option="order_by")
    attrs["limit"] = IntegerOptionParameter(option="limit")
    attrs["offset"] = IntegerOptionParameter(option="offset")
    attrs["count"] = BooleanOptionParameter(option="count")
    for parameter, key in (extra or {}).items():
        attrs[parameter] = BooleanOptionParameter(option=f"extra.{key}")
    attrs["Meta"] = type("Meta", (), {"model": model, "fields": []})
    attrs["__doc__"] = f"Query parameters of {name}."
    return type(name, (QueryFilterSet,), attrs)


SessionFilterSet = filterset_for(
    "SessionFilterSet",
    UserSession,
    SESSION_HISTORY_DEVICE_SCHEMA,
    extra={"history": "history", "device": "device"},
)
ApiKeyFilterSet = filterset_for("ApiKeyFilterSet", ApiKey, API_KEY_SCHEMA)
AuditFilterSet = filterset_for("AuditFilterSet", AuditRecord, AUDIT_SCHEMA)
