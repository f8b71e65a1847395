"""The DRF REST API at ``/api/v2.0/`` (interfaces.md §2): thin views over the same services and
selectors as JSON-RPC. Rows are the selectors' rows (``auth.sessions`` keys, ``{"$date": ms}``
datetimes); every error is ``{"errors": [{"attribute", "message", "errno"}]}``.
"""
