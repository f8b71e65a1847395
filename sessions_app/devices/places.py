"""A session's place, from its address: optional, with a MaxMind-format database (GeoLite2 City or
Country) named by ``SESSIONS_GEOIP_PATH``, read with ``geoip2``.

Without the setting nothing is looked up (the reader is never opened) and pages show the address
only. Loopback, private, link-local and other non-public addresses are "Local network" whatever
the database says. An address the database does not know has no place. The reader is opened once
per process and path and reused (it memory-maps the file).

`network` is what new-sign-in notices compare besides the device: the country when GeoIP gives
one, else the /24 (IPv4) or /48 (IPv6) the address is in.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sessions_app import conf

logger = logging.getLogger(__name__)

LOCAL_NETWORK = "Local network"
_lock = threading.Lock()
_readers: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Place:
    country: str | None = None  # the country's name in English ("Germany"), or LOCAL_NETWORK
    city: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2 ("DE")

    @property
    def label(self) -> str:
        return ", ".join(part for part in (self.city, self.country) if part)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def geoip_path() -> str:
    return str(conf.get("SESSIONS_GEOIP_PATH") or "")


def _reader(path: str) -> Any:
    with _lock:
        if path not in _readers:
            import geoip2.database

            _readers[path] = geoip2.database.Reader(path)
        return _readers[path]


def locate(text: str | None) -> Place | None:
    """The place of the address ``text``; None without GeoIP or when nothing is known of it."""
    path = geoip_path()
    address = _address(text)
    if not path or address is None:
        return None
    if not address.is_global:
        return Place(country=LOCAL_NETWORK)
    return _lookup(path, str(address))


@lru_cache(maxsize=4096)
def _lookup(path: str, address: str) -> Place | None:
    import geoip2.errors
    from maxminddb import InvalidDatabaseError

    try:
        reader = _reader(path)
        if "City" in reader.metadata().database_type:
            found = reader.city(address)
            city = found.city.name
        else:
            found = reader.country(address)
            city = None
    except geoip2.errors.AddressNotFoundError:
        return None
    except (
        OSError,
        ValueError,
        InvalidDatabaseError,
    ) as exc:  # unreadable or not a MaxMind database: no place, logged
        logger.error("SESSIONS_GEOIP_PATH %s cannot be read: %s", path, exc)
        return None
    if found.country.name is None:
        return None
    return Place(country=found.country.name, city=city, country_code=found.country.iso_code)


def network(text: str | None, place: Place | None) -> str:
    """The network of a login for new-sign-in notices: ``country:DE``, or ``10.1.2.0/24`` / a /48."""
    if place is not None and place.country_code:
        return f"country:{place.country_code}"
    address = _address(text)
    if address is None:
        return ""
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
