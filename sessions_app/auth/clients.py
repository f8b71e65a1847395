"""Who is on the other end of a request: address, port, transport security, unix-socket peer."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

from sessions_app import conf
from sessions_app.devices.agents import clean

_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class Client:
    """The client of one request (or one WebSocket connection).

    ``address`` is the client IP (from the socket, or from ``X-Forwarded-For`` only when the socket
    peer is a trusted proxy); ``peer`` is ``(pid, uid, gid)`` from ``SO_PEERCRED`` on the unix socket.
    """

    address: str | None = None
    port: int | None = None
    secure: bool = False
    peer: tuple[int, int, int] | None = None
    #: The ``User-Agent`` header as kept (`devices.agents.clean`: capped, printable), or None.
    user_agent: str | None = None
    #: A WebSocket connection (a login there without ``User-Agent`` is a TrueNAS client).
    websocket: bool = False
    #: The ``Host`` header as sent (unchecked: `services.notices` checks it against ALLOWED_HOSTS
    #: before it names the service in an email link).
    host: str | None = None

    @property
    def origin(self) -> str:
        if self.peer is not None:
            pid, uid, gid = self.peer
            return f"UNIX socket (pid={pid} uid={uid} gid={gid})"
        host = self.address or "unknown"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port if self.port is not None else 0}"

    @property
    def is_loopback(self) -> bool:
        if self.peer is not None:
            return True
        try:
            return ipaddress.ip_address(self.address or "").is_loopback
        except ValueError:
            return False

    @property
    def secure_transport(self) -> bool:
        """HTTPS, the unix socket, or loopback."""
        return self.secure or self.is_loopback

    @property
    def rate_key(self) -> str:
        """What rate limits are counted by: the IP, or the uid on the unix socket."""
        if self.peer is not None:
            return f"uid:{self.peer[1]}"
        return self.address or "unknown"


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in conf.get("SESSIONS_TRUSTED_PROXIES"):
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def peer_credentials(sock: Any) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of a unix-socket peer, from the kernel (``SO_PEERCRED``)."""
    try:
        if sock is None or sock.family != socket.AF_UNIX:
            return None
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (OSError, AttributeError):
        return None
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def scope_peer_credentials(scope: Any) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` that `sessions_app.server.asgi_worker` put in an ASGI scope of a unix-socket
    connection (``scope["extensions"]["peercred"]``), or None."""
    found = ((scope or {}).get("extensions") or {}).get("peercred")
    if not isinstance(found, dict):
        return None
    try:
        return int(found["pid"]), int(found["uid"]), int(found["gid"])
    except (KeyError, TypeError, ValueError):
        return None


def client_from_environ(meta: Any, *, is_secure: bool, scope: Any = None) -> Client:
    """The client of a request: WSGI ``META`` (gunicorn's socket), or an ASGI request's ``META`` and
    ``scope``. Only the socket and trusted proxies are believed."""
    peer = (
        scope_peer_credentials(scope) if scope is not None else peer_credentials(meta.get("gunicorn.socket"))
    )
    if peer is not None:
        return Client(peer=peer, secure=True)
    user_agent = clean(meta.get("HTTP_USER_AGENT"))
    websocket = (scope or {}).get("type") == "websocket"
    remote = meta.get("REMOTE_ADDR") or ""
    address = _valid_ip(remote)
    port_text = str(meta.get("REMOTE_PORT") or "")
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else None
    if address is not None and _trusted(address):
        forwarded = [part for part in (meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if part.strip()]
        # Walk from the nearest hop: the first address that is not itself a trusted proxy is the client.
        for hop in reversed(forwarded):
            hop_ip = _valid_ip(hop)
            if hop_ip is None:
                break
            address, port = hop_ip, None
            if not _trusted(hop_ip):
                break
    host = str(meta.get("HTTP_HOST") or _server_name(meta))[:255] or None
    return Client(
        address=address, port=port, secure=is_secure, user_agent=user_agent, websocket=websocket, host=host
    )


def _server_name(meta: Any) -> str:
    """``SERVER_NAME[:SERVER_PORT]``: what Django's ``get_host`` falls back to without a Host header."""
    name, port = str(meta.get("SERVER_NAME") or ""), str(meta.get("SERVER_PORT") or "")
    return f"{name}:{port}" if name and port and port not in ("80", "443") else name


def _over_tls(meta: Any, scheme: str) -> bool:
    """Whether the request reached us over TLS: our own TLS (``https``/``wss``), or a trusted proxy's,
    which says so in ``SECURE_PROXY_SSL_HEADER``. The header is believed from a trusted proxy only
    (``SESSIONS_TRUSTED_PROXIES``), as ``X-Forwarded-For`` is: a client talking to the service
    directly cannot claim TLS (which decides ``secure_transport``, the revocation of a plain-text API
    key and SCRAM channel binding)."""
    if scheme in ("https", "wss"):
        return True
    remote = _valid_ip(str(meta.get("REMOTE_ADDR") or ""))
    if remote is None or not _trusted(remote):
        return False
    from django.conf import settings

    proxy = settings.SECURE_PROXY_SSL_HEADER
    return bool(proxy) and meta.get(proxy[0]) == proxy[1]


def client_from_request(request: Any) -> Client:
    cached = getattr(request, "_sessions_client", None)
    if cached is None:
        # ASGI: Django's ASGIRequest keeps the scope; the WSGI bridge puts it in META.
        scope = getattr(request, "scope", None) or request.META.get("asgi.scope")
        # _get_scheme: the connection's own scheme, before Django applies SECURE_PROXY_SSL_HEADER.
        secure = _over_tls(request.META, request._get_scheme())
        cached = client_from_environ(request.META, is_secure=secure, scope=scope)
        request._sessions_client = cached
    return cached


def client_from_scope(scope: Any) -> Client:
    """The client of an ASGI WebSocket connection (same rules as for an HTTP request)."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or []:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    client = scope.get("client") or (None, None)
    meta = {**headers, "REMOTE_ADDR": client[0] or "", "REMOTE_PORT": client[1] or ""}
    return client_from_environ(meta, is_secure=_over_tls(meta, str(scope.get("scheme") or "")), scope=scope)
