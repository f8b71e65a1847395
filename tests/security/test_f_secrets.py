"""security.md group F: secrets at rest (F6) and API-key names scoped to their owner (F14).

F6: the files of the service are private to its account (0600 / 0700); TOTP seeds are sealed with a
key that is not in the database (`sessions_app.auth.fieldcrypt`), so the raw rows hold no seed, and
``manage.py rotate_field_key`` moves them to a new key while codes keep working.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.utils import ConnectionHandler
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth import fieldcrypt
from sessions_app.auth.totp_seeds import seal_seed
from sessions_app.models import ApiKey, AuditRecord
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SEED_HEX = re.compile(r"[0-9a-fA-F]{40}")
KEY_2 = "k2-" + "a" * 40
KEY_3 = "k3-" + "b" * 40


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def raw_rows() -> list[tuple[Any, ...]]:
    """Every column of every TOTP device as the database holds it (what a dump shows)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {TOTPDevice._meta.db_table}")  # noqa: S608 - a fixed table name
        return list(cursor.fetchall())


def stored_key(device: TOTPDevice) -> str:
    value = TOTPDevice.objects.filter(pk=device.pk).values_list("key", flat=True).get()
    assert isinstance(value, str)
    return value


def login_with_code(rpc: Any, username: str, code: str) -> Any:
    client = rpc()
    first = client.call(
        "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": PASSWORD}
    )
    assert first["response_type"] == "OTP_REQUIRED"
    return client.call("auth.login_ex_continue", {"mechanism": "OTP_TOKEN", "otp_token": code})


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_field_key", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- F6: TOTP seeds sealed at rest ----------------------------------------------------------------


def test_f06_totp_seeds_are_sealed_and_a_dump_alone_yields_no_seed(
    make_user: Any, rpc: Any, totp: Any, settings: Any
) -> None:
    alice = make_user("alice")
    device = totp.device(alice)
    seed = device.bin_key
    # As the enrolment service creates it: django-otp's default (random hex) key, unconfirmed.
    enrolled = TOTPDevice.objects.create(user=make_user("bob"), name="Authenticator app", confirmed=False)
    TOTPDevice.objects.create(user=make_user("carol"), name="default key", confirmed=True)
    rows = raw_rows()
    assert len(rows) == 3
    for row in rows:
        for value in row:
            assert not SEED_HEX.search(str(value)), row
    assert seed.hex() not in repr(rows)
    for key in TOTPDevice.objects.values_list("key", flat=True):
        assert key.startswith("enc1:")
        assert len(key) <= 80
    # The seed still works everywhere django-otp reads it: codes, the enrolment QR code's URL.
    assert TOTPDevice.objects.get(pk=device.pk).bin_key == seed
    assert login_with_code(rpc, "alice", totp.code(device))["response_type"] == "SUCCESS"
    assert "secret=" in TOTPDevice.objects.get(pk=enrolled.pk).config_url
    # Without the key (a dump on another machine), the column opens to nothing.
    settings.SECRET_KEY = "another machine's secret key"
    with pytest.raises(fieldcrypt.FieldKeyError):
        TOTPDevice.objects.get(pk=device.pk).bin_key  # noqa: B018 - the property is the check


def test_f06_a_seed_no_configured_key_opens_fails_closed(
    make_user: Any, rpc: Any, totp: Any, settings: Any, caplog: Any
) -> None:
    """A wrong or lost field key refuses the codes (AUTH_ERR, logged), never a 500."""
    device = totp.device(make_user("alice"))
    code = totp.code(device)
    settings.SECRET_KEY = "another machine's secret key"
    assert login_with_code(rpc, "alice", code) == {"response_type": "AUTH_ERR"}
    assert f"TOTP device {device.pk}: no configured field key opens its seed" in caplog.text
    assert code not in caplog.text


def test_f06_a_sealed_seed_moved_to_another_users_device_does_not_open(make_user: Any, totp: Any) -> None:
    alice, mallory = make_user("alice"), make_user("mallory")
    victim = totp.device(alice)
    own = totp.device(mallory)
    # Someone who can write rows copies their own sealed seed onto the victim's device: it must not
    # become the victim's seed (the owner is in the associated data).
    TOTPDevice.objects.filter(pk=victim.pk).update(key=stored_key(own))
    with pytest.raises(fieldcrypt.FieldKeyError):
        TOTPDevice.objects.get(pk=victim.pk).bin_key  # noqa: B018
    # An administrator's change of owner re-seals the seed for the new owner.
    moved = TOTPDevice.objects.get(pk=own.pk)
    seed = moved.bin_key
    moved.user = alice
    moved.save()
    assert TOTPDevice.objects.get(pk=own.pk).bin_key == seed


def test_f06_fieldcrypt_is_generic_authenticated_and_versioned(settings: Any) -> None:
    """The API the SCRAM verifiers will use: any bytes, the caller's associated data."""
    verifier = os.urandom(32)
    sealed = fieldcrypt.seal(verifier, aad=b"api_key.scram|key:7")
    assert fieldcrypt.is_sealed(sealed)
    assert fieldcrypt.is_current(sealed)
    assert fieldcrypt.unseal(sealed, aad=b"api_key.scram|key:7") == verifier
    assert fieldcrypt.seal(verifier, aad=b"x") != fieldcrypt.seal(verifier, aad=b"x")  # fresh nonces
    for bad in (
        lambda: fieldcrypt.unseal(sealed, aad=b"api_key.scram|key:8"),
        lambda: fieldcrypt.unseal(sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1], aad=b"x"),
        lambda: fieldcrypt.unseal("enc1:!!", aad=b"x"),
    ):
        with pytest.raises(fieldcrypt.FieldKeyError) as caught:
            bad()
        assert verifier.hex() not in str(caught.value)
    assert len(seal_seed(os.urandom(20).hex(), user_id=1)) == 75  # fits django-otp's 80-character column
    settings.SESSIONS_FIELD_KEY = "too short"
    with pytest.raises(Exception, match="at least 32 characters"):
        fieldcrypt.seal(b"x", aad=b"x")


def test_f06_rotate_field_key_then_codes_still_work(
    make_user: Any, rpc: Any, totp: Any, settings: Any
) -> None:
    device = totp.device(make_user("alice"))
    seed = device.bin_key
    under_secret_key = stored_key(device)
    # 1. A new key: values under the key derived from SECRET_KEY still open (and --check says so).
    settings.SESSIONS_FIELD_KEY = KEY_2
    assert TOTPDevice.objects.get(pk=device.pk).bin_key == seed
    with pytest.raises(CommandError, match="1 values are not under the current key"):
        rotate("--check")
    assert stored_key(device) == under_secret_key
    # 2. The rotation re-seals it, audited; codes keep working, and SECRET_KEY is no longer needed.
    assert "TOTP seeds: 1 re-encrypted under the current key, 0 plain sealed, 0 already current" in rotate()
    rotated = stored_key(device)
    assert rotated != under_secret_key
    assert fieldcrypt.is_current(rotated)
    assert AuditRecord.objects.filter(event_data__method="field_key.rotate").count() == 1
    settings.SECRET_KEY = "a new secret key"
    device.refresh_from_db()
    assert login_with_code(rpc, "alice", totp.code(device))["response_type"] == "SUCCESS"
    assert "0 to re-encrypt under the current key, 0 plain to seal, 1 already current" in rotate("--check")
    # 3. Again, to a third key with the second as previous; then the previous key is dropped.
    settings.SESSIONS_FIELD_KEY, settings.SESSIONS_FIELD_KEY_PREVIOUS = KEY_3, [KEY_2]
    assert "1 re-encrypted" in rotate()
    settings.SESSIONS_FIELD_KEY_PREVIOUS = []
    device.refresh_from_db()
    assert device.bin_key == seed
    assert login_with_code(rpc, "alice", totp.code(device, 1))["response_type"] == "SUCCESS"
    for row in raw_rows():
        assert not any(SEED_HEX.search(str(value)) for value in row)


def test_f06_scram_verifiers_are_sealed_and_rotated(make_user: Any, settings: Any) -> None:
    """An API key's SCRAM verifier is sealed with its key id in the associated data (a verifier copied
    onto another key does not open) and moves to a new field key with the TOTP seeds."""
    from sessions_app.services.api_keys import api_key_create, verifier_open

    alice = make_user("alice")
    key, plaintext = api_key_create(user=alice, name="ci")
    other, _ = api_key_create(user=alice, name="other")
    key.refresh_from_db()
    stored = key.scram_verifier or ""
    assert fieldcrypt.is_sealed(stored)
    assert plaintext.split("-", 1)[1] not in stored
    verifier = verifier_open(key)
    assert verifier is not None
    assert verifier.iterations == settings.SESSIONS_SCRAM_ITERATIONS
    ApiKey.objects.filter(pk=other.pk).update(scram_verifier=stored)
    assert verifier_open(ApiKey.objects.get(pk=other.pk)) is None  # moved: does not open
    ApiKey.objects.filter(pk=other.pk).delete()
    settings.SESSIONS_FIELD_KEY = KEY_2
    report = rotate()
    assert (
        "SCRAM verifiers: 1 re-encrypted under the current key, 0 plain sealed, 0 already current" in report
    )
    key.refresh_from_db()
    assert key.scram_verifier != stored
    assert fieldcrypt.is_current(key.scram_verifier)
    settings.SECRET_KEY = "a new secret key"  # the previous field key is gone: the verifier still opens
    assert verifier_open(key) == verifier


def test_f06_rotation_is_all_or_nothing(make_user: Any, totp: Any, settings: Any) -> None:
    first = totp.device(make_user("alice"))
    settings.SESSIONS_FIELD_KEY = KEY_2
    second = totp.device(make_user("bob"))
    # A plain seed (written by the previous release during a rollout) is read, and sealed by rotation.
    TOTPDevice.objects.filter(pk=second.pk).update(key="ab" * 20)
    assert TOTPDevice.objects.get(pk=second.pk).bin_key == bytes.fromhex("ab" * 20)
    before = {first.pk: stored_key(first), second.pk: stored_key(second)}
    settings.SECRET_KEY = "the old key is lost"  # `first` is sealed under a key no longer configured
    with pytest.raises(CommandError) as caught:
        rotate()
    assert str(caught.value) == (
        "cannot be opened with SESSIONS_FIELD_KEY or SESSIONS_FIELD_KEY_PREVIOUS: "
        f"1 TOTP seeds (ids {first.pk}); nothing was changed"
    )
    assert {first.pk: stored_key(first), second.pk: stored_key(second)} == before
    assert not AuditRecord.objects.filter(event_data__method="field_key.rotate").exists()


def test_f06_rotate_field_key_usage_error_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SECRET_KEY": "x", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "manage.py", "rotate_field_key", "--bogus"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        done.stderr.strip().splitlines()[-1]
        == "manage.py rotate_field_key: error: unrecognized arguments: --bogus"
    )
    assert "Traceback" not in done.stderr


def test_f06_migration_seals_existing_seeds_and_can_reverse(make_user: Any, totp: Any) -> None:
    migration = importlib.import_module("sessions_app.migrations.0010_encrypt_totp_seeds")
    device = totp.device(make_user("alice"))
    seed = device.bin_key
    migration.open_seeds(apps, None)
    assert stored_key(device) == seed.hex()  # unapplied: the plain hex of before
    migration.seal_seeds(apps, None)
    sealed = stored_key(device)
    assert fieldcrypt.is_sealed(sealed)
    migration.seal_seeds(apps, None)  # re-running changes nothing
    assert stored_key(device) == sealed
    assert TOTPDevice.objects.get(pk=device.pk).bin_key == seed


# --- F6: files private to the service's account ----------------------------------------------------


def test_f06_sqlite_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    fresh, old = tmp_path / "fresh.sqlite3", tmp_path / "old.sqlite3"
    with umask(0o022):
        # A database an older release left 0644, with its -wal and -shm.
        legacy = sqlite3.connect(old)
        legacy.execute("PRAGMA journal_mode=WAL")
        legacy.execute("CREATE TABLE t (x)")
        legacy.commit()
        assert mode(old) == 0o644
        handler = ConnectionHandler(
            {
                name: {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(path),
                    "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;"},
                }
                for name, path in (("default", fresh), ("old", old))
            }
        )
        try:
            for name in ("default", "old"):
                with handler[name].cursor() as cursor:
                    cursor.execute("CREATE TABLE IF NOT EXISTS u (x)")
                    cursor.execute("INSERT INTO u VALUES (1)")
            # While connected, WAL mode keeps the -wal and -shm files (removed at the last close).
            files = [f"{path}{suffix}" for path in (fresh, old) for suffix in ("", "-wal", "-shm")]
            assert {name: mode(name) for name in files} == dict.fromkeys(files, 0o600)
        finally:
            handler.close_all()
            legacy.close()


def test_f06_var_is_0700_and_bin_serve_sets_umask_077(tmp_path: Path) -> None:
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    var.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-c", "import project.settings"],
        cwd=ROOT,
        env={**env, "DJANGO_SECRET_KEY": "x"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mode(var) == 0o700
    serve = (ROOT / "bin" / "serve").read_text().splitlines()
    assert serve.index("umask 077") < next(i for i, line in enumerate(serve) if line.startswith("source "))


def test_f06_audit_export_file_is_0600_even_over_a_stale_partial(tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    stale = tmp_path / ".audit.jsonl.partial"
    with umask(0o022):
        stale.write_text("left over")
        stale.chmod(0o644)
        call_command(
            "audit_export", "--since", "1d", "--output", str(target), stdout=StringIO(), stderr=StringIO()
        )
    assert mode(target) == 0o600
    assert not stale.exists()


# --- F14: API key names are unique per user -----------------------------------------------------


def test_f14_api_key_names_are_unique_per_user_not_across_users(make_user: Any, rpc: Any) -> None:
    make_user("carol")
    make_user("bob")
    carol, bob = rpc(), rpc()
    carol.login("carol")
    bob.login("bob")
    assert carol.call("api_key.create", {"name": "carol-key"})["name"] == "carol-key"
    # Bob may use the same name: the answer tells him nothing about carol's keys.
    created = bob.call("api_key.create", {"name": "carol-key"})
    assert created["name"] == "carol-key"
    assert created["username"] == "bob"
    assert ApiKey.objects.filter(name="carol-key").count() == 2
    # The same user twice: the clear validation error, on the name.
    error = bob.error("api_key.create", {"name": "carol-key"})
    assert error["code"] == -32602
    assert [e[:2] for e in error["data"]["extra"]] == [
        ["api_key_create.name", "an API key with this name already exists"]
    ]
    # Renaming onto one's own other key is refused the same way; onto another user's name is not.
    other = bob.call("api_key.create", {"name": "spare"})
    error = bob.error("api_key.update", other["id"], {"name": "carol-key"})
    assert [e[:2] for e in error["data"]["extra"]] == [
        ["api_key_update.name", "an API key with this name already exists"]
    ]
    carol_spare = carol.call("api_key.create", {"name": "c2"})
    assert carol.call("api_key.update", carol_spare["id"], {"name": "spare"})["name"] == "spare"
