"""A tiny MaxMind-format database for tests, written with ``mmdb-writer``: nothing is downloaded.

``write_geoip(path)`` maps a few documentation and public networks to places, in the shape of
GeoLite2 City (``kind="City"``) or Country (``kind="Country"``) records, which ``geoip2`` reads.
"""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

#: network -> (ISO code, country name, city name)
PLACES = {
    "81.2.69.0/24": ("GB", "United Kingdom", "London"),
    "89.160.20.0/24": ("SE", "Sweden", "Linköping"),
    "2a01:4f8:100::/48": ("DE", "Germany", "Berlin"),
}


def write_geoip(
    path: Path, *, kind: str = "City", places: dict[str, tuple[str, str, str]] | None = None
) -> Path:
    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type=f"GeoLite2-{kind}", languages=["en"]
    )
    for network, (code, country, city) in (places or PLACES).items():
        record: dict[str, object] = {"country": {"iso_code": code, "names": {"en": country}}}
        if kind == "City":
            record["city"] = {"names": {"en": city}}
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path
