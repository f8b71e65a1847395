"""JSON out with the wire format of JSON-RPC: datetimes are ``{"$date": <ms since epoch>}``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

from sessions_app.api.jsonrpc import ejson_default


class EJSONEncoder(JSONEncoder):
    def default(self, obj: Any) -> Any:
        if isinstance(obj, dt.datetime):
            return ejson_default(obj)
        return super().default(obj)


class EJSONRenderer(JSONRenderer):
    encoder_class = EJSONEncoder
