"""Which model columns hold a secret: password hashes, key and token hashes, second-factor seeds.

One rule, decided by the column's name, so that a column added later is covered without anyone
remembering to list it: a concrete, non-relational field whose name is, or ends in ``_``-separated,
one of `SECRET_WORDS` (``password``, ``key_hash``, ``secret_hash``, ``user_auth_hash``, django-otp's
``key`` and ``token`` …). Names that merely contain such a word elsewhere (``api_key_name``,
``password_change_required``, the ``api_key`` relation) are not secrets: a new secret column is named
so that the rule sees it.

A secret is never displayed, filtered, searched, ordered or counted through any interface; the admin
(`sessions_app.admin`) and its system check use `is_secret_path` to refuse lookups such as
``key__regex``, ``user__password__startswith`` or ``api_key__key_hash`` that reach one through
relations.
"""

from __future__ import annotations

import re
from functools import cache

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.constants import LOOKUP_SEP

SECRET_WORDS = ("hash", "secret", "key", "password", "token", "nonce", "salt", "seed", "verifier")
_SECRET_NAME = re.compile(rf"(?:^|_)(?:{'|'.join(SECRET_WORDS)})$")


@cache
def secret_field_names(model: type[models.Model]) -> frozenset[str]:
    """The names of ``model``'s secret columns."""
    return frozenset(
        field.name
        for field in model._meta.concrete_fields
        if not field.is_relation and _SECRET_NAME.search(field.name)
    )


def is_secret_path(model: type[models.Model], path: str) -> bool:
    """Whether the lookup ``path`` (``"user__password__startswith"``, ``"-key_hash"``) reaches a secret.

    Relations are followed (forward and reverse, by field name or attname); the first part that is not
    a relation decides; a part that is no field (a lookup or transform such as ``regex``) ends the walk.
    """
    current = model
    for part in path.lstrip("-").split(LOOKUP_SEP):
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if not field.is_relation:
            return field.name in secret_field_names(current)
        related = field.related_model
        if related is None or isinstance(related, str):
            return False
        current = related
    return False
