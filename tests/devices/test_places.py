"""`sessions_app.devices.places`: the place of an address, only when a GeoIP database is configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sessions_app.devices import places
from sessions_app.devices.places import LOCAL_NETWORK, Place, locate, network
from tests.devices.geoip import write_geoip


@pytest.fixture
def geoip(tmp_path: Path, settings: Any) -> Path:
    path = write_geoip(tmp_path / "city.mmdb")
    settings.SESSIONS_GEOIP_PATH = str(path)
    places._lookup.cache_clear()
    return path


def test_without_the_setting_nothing_is_looked_up(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.SESSIONS_GEOIP_PATH = ""

    def never(path: str) -> None:
        raise AssertionError("the GeoIP reader was opened")

    monkeypatch.setattr(places, "_reader", never)
    assert locate("81.2.69.10") is None
    assert locate("10.1.2.3") is None


def test_city_database(geoip: Path) -> None:
    assert locate("81.2.69.10") == Place(country="United Kingdom", city="London", country_code="GB")
    assert locate("2a01:4f8:100::7") == Place(country="Germany", city="Berlin", country_code="DE")
    assert locate("::ffff:81.2.69.10") == locate("81.2.69.10")
    assert locate("8.8.8.8") is None  # not in the database: no place
    assert locate("81.2.69.10").label == "London, United Kingdom"  # type: ignore[union-attr]


def test_country_database(tmp_path: Path, settings: Any) -> None:
    settings.SESSIONS_GEOIP_PATH = str(write_geoip(tmp_path / "country.mmdb", kind="Country"))
    places._lookup.cache_clear()
    assert locate("89.160.20.5") == Place(country="Sweden", city=None, country_code="SE")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "192.168.1.20", "::1", "fe80::1", "fd00::1"])
def test_private_and_loopback_addresses_are_the_local_network(geoip: Path, address: str) -> None:
    assert locate(address) == Place(country=LOCAL_NETWORK)


@pytest.mark.parametrize("address", [None, "", "not an address", "unknown"])
def test_no_address_no_place(geoip: Path, address: str | None) -> None:
    assert locate(address) is None


def test_an_unreadable_database_gives_no_place_and_is_logged(
    tmp_path: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a maxmind database")
    settings.SESSIONS_GEOIP_PATH = str(broken)
    places._lookup.cache_clear()
    places._readers.pop(str(broken), None)
    assert locate("81.2.69.10") is None
    assert "cannot be read" in caplog.text


def test_network_is_the_country_else_the_prefix() -> None:
    assert network("81.2.69.10", Place("United Kingdom", "London", "GB")) == "country:GB"
    assert network("81.2.69.10", None) == "81.2.69.0/24"
    assert network("2a01:4f8:100::7", None) == "2a01:4f8:100::/48"
    assert network("10.0.0.5", Place(country=LOCAL_NETWORK)) == "10.0.0.0/24"
    assert network(None, None) == ""
