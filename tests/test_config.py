"""Configuration from one place (issue 20): the table of `project.env`, its parsers, its document.

The drift tests compare three things that used to disagree: what docs/configuration.md says, what
the table in project/env.py declares, and what the code and the shell scripts actually read -- both
ways, and reader by reader. The start-up tests run ``manage.py`` in a process of its own: a bad value
stops it with exit status 2 and exactly one line on standard error naming the variable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from project import env
from project.env import ConfigurationError, Kind, Var
from sessions_app import conf

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "configuration.md"
ALL_READERS = [env.SETTINGS, env.APP, *env.SCRIPTS]

# --- What the code and the scripts read -------------------------------------------------------------

#: ``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")`` (``setdefault`` writes, not reads).
_PY_READ = re.compile(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")
#: How project/settings.py reads: ``_env["X"]``, the values `env.load` returned.
_SETTINGS_READ = re.compile(r"""\b_env\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")
#: ``${NAME``, ``${NAME:-…}``, ``$NAME`` -- upper-case names only: lower case are the scripts' own.
_SHELL_READ = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
#: Upper-case names the scripts set for themselves, with the line that must set them (so that
#: excluding one can never hide a variable the environment supplies).
_SHELL_OWN = {"ROOT": ("bin/_venv.sh", re.compile(r"^ROOT=", re.MULTILINE)), "BASH_SOURCE": None}


def python_reads() -> dict[str, set[str]]:
    """Environment name → the readers that read it in project/, sessions_app/ and manage.py."""
    found: dict[str, set[str]] = defaultdict(set)
    files = [ROOT / "manage.py", *(ROOT / "project").rglob("*.py"), *(ROOT / "sessions_app").rglob("*.py")]
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        if relative == "project/env.py":
            continue  # the table itself: its reads are by row, not by literal
        text = path.read_text()
        reader = env.APP if relative.startswith("sessions_app/") else relative
        for name in _PY_READ.findall(text):
            found[name].add(reader)
        if relative == "project/settings.py":
            for name in _SETTINGS_READ.findall(text):
                found[name].add(env.SETTINGS)
    return found


def script_reads() -> dict[str, set[str]]:
    """Environment name → the scripts that read it (``${NAME…}`` or ``$NAME``, comments left out)."""
    found: dict[str, set[str]] = defaultdict(set)
    for script in env.SCRIPTS:
        lines = (ROOT / script).read_text().splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        for name in _SHELL_READ.findall(code):
            if name not in _SHELL_OWN:
                found[name].add(script)
    return found


def actual_readers() -> dict[str, set[str]]:
    """Row name → every reader found (``NAME_FILE`` counts for its row); unknown names kept as they are."""
    readers: dict[str, set[str]] = defaultdict(set)
    for found in (python_reads(), script_reads()):
        for name, where in found.items():
            row = env.variable_for(name)
            readers[row.name if row else name] |= where
    return readers


def test_the_shell_scripts_own_names_are_set_by_them() -> None:
    for name, rule in _SHELL_OWN.items():
        if rule is not None:
            script, pattern = rule
            assert pattern.search((ROOT / script).read_text()), f"{script} no longer sets {name}"


def test_every_variable_read_is_in_the_table() -> None:
    unknown = {name: sorted(where) for name, where in actual_readers().items() if name not in env.BY_NAME}
    assert unknown == {}, "read but not in project/env.py's table: add a row (then --update the docs)"


def test_every_row_is_read_and_by_the_readers_it_names() -> None:
    found = actual_readers()
    declared = {var.name: set(var.read_by) for var in env.VARS}
    assert {name: found.get(name, set()) for name in declared} == declared


def test_settings_read_the_environment_only_through_env() -> None:
    text = (ROOT / "project" / "settings.py").read_text()
    assert "os.environ" not in text
    assert "os.getenv" not in text
    assert "env.load()" in text


def test_the_table_names_are_unique_and_well_formed() -> None:
    names = [var.name for var in env.VARS]
    assert len(names) == len(set(names))
    for var in env.VARS:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", var.name)
        assert var.group in env.GROUPS
        assert var.doc
        assert "\n" not in var.doc
        assert set(var.read_by) <= set(ALL_READERS)
        assert (var.rule is None) or var.form, f"{var.name}: a rule needs a form saying what it accepts"
        if var.kind in (Kind.INT, Kind.FLOAT, Kind.DURATION) and var.default is not None:
            assert var.value({}) == var.default
            var.parse(str(var.default))  # the default itself is within bounds
    # A file's variable would collide with a row of that name.
    assert not {f"{var.name}_FILE" for var in env.VARS if var.file} & set(names)


# --- The document ----------------------------------------------------------------------------------


def test_the_documented_table_is_the_generated_one() -> None:
    documented = env.table_in(DOCUMENT.read_text())
    assert documented == env.markdown(), (
        "docs/configuration.md differs from project/env.py: "
        ".venv/bin/python -m project.env --update docs/configuration.md"
    )


def test_every_row_is_documented_once() -> None:
    table = env.table_in(DOCUMENT.read_text())
    for var in env.VARS:
        assert table.count(f"| `{var.name}` |") == 1, var.name


def test_update_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    target.write_text(f"intro\n{env.BEGIN_MARKER}\nstale\n{env.END_MARKER}\noutro\n")
    assert env.main(["--update", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("intro\n")
    assert text.endswith(f"{env.END_MARKER}\noutro\n")
    assert env.table_in(text) == env.markdown()
    (tmp_path / "plain.md").write_text("no markers\n")
    assert env.main(["--update", str(tmp_path / "plain.md")]) == 1


# --- The app's defaults and settings ---------------------------------------------------------------


def _default(var: Var) -> Any:
    return list(var.default) if var.kind is Kind.LIST else var.default


def test_every_app_knob_is_a_variable_with_the_same_default() -> None:
    for name, default in conf.DEFAULTS.items():
        var = env.BY_NAME.get(name)
        assert var is not None, f"sessions_app/conf.py's {name} cannot be set from the environment"
        assert env.SETTINGS in var.read_by, name
        assert _default(var) == default, name


def test_every_sessions_variable_of_settings_is_an_app_knob_and_a_setting() -> None:
    for var in env.VARS:
        if var.name.startswith("SESSIONS_") and env.SETTINGS in var.read_by:
            assert var.name in conf.DEFAULTS, var.name
            assert hasattr(django_settings, var.name), var.name


# --- Parsers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(word, True) for word in ("1", "true", "TRUE", "True", "yes", "Yes", "on", "ON", " on ")],
        *[(word, False) for word in ("0", "false", "FALSE", "no", "No", "off", "Off", " false\n")],
    ],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert env.parse_bool(text) is expected


@pytest.mark.parametrize("text", ["maybe", "", "2", "tru", "y", "n", "enabled", "-1", "truee"])
def test_parse_bool_refuses_other_words(text: str) -> None:
    with pytest.raises(ValueError, match="not a boolean"):
        env.parse_bool(text)


@pytest.mark.parametrize(("text", "expected"), [("42", 42), ("-1", -1), ("+3", 3), (" 7 ", 7), ("0", 0)])
def test_parse_int(text: str, expected: int) -> None:
    assert env.parse_int(text) == expected


@pytest.mark.parametrize("text", ["abc", "1.5", "1_000", "1e3", "", "0x10", "1 2", "١٢"])
def test_parse_int_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not an integer"):
        env.parse_int(text)


@pytest.mark.parametrize(("text", "expected"), [("0.25", 0.25), ("1e3", 1000.0), ("-2", -2.0), (" 3 ", 3.0)])
def test_parse_float(text: str, expected: float) -> None:
    assert env.parse_float(text) == expected


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "-inf", "", "1e999"])
def test_parse_float_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        env.parse_float(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", 90),
        ("0", 0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("10.", 10),
        ("45s", 45),
        ("5m", 300),
        ("0.5m", 30),
        ("12h", 43200),
        ("2H", 7200),
        ("1d", 86400),
        (" 30 m ", 1800),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    value = env.parse_duration(text)
    assert value == expected
    assert isinstance(value, int) == float(expected).is_integer()


@pytest.mark.parametrize("text", ["-1", "5x", "m", "", "1 2", "nan", "inf", "1w", "5mm", "1e3", "1,5"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        env.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), ("a,,b", ["a", "b"]), (",", []), ("one", ["one"])],
)
def test_parse_list(text: str, expected: list[str]) -> None:
    assert env.parse_list(text) == expected


# --- One variable: defaults, bounds, files, secrets -----------------------------------------------


def test_unset_and_empty_mean_the_default() -> None:
    var = env.BY_NAME["DJANGO_DB_POOL_SIZE"]
    assert var.value({}) == 10
    assert var.value({"DJANGO_DB_POOL_SIZE": ""}) == 10
    assert var.value({"DJANGO_DB_POOL_SIZE": "  "}) == 10
    assert var.value({"DJANGO_DB_POOL_SIZE": "0"}) == 0


def test_one_boolean_rule_for_every_boolean() -> None:
    """``DJANGO_DB_PREPARED=on`` once meant false while ``DJANGO_DEBUG=on`` meant true."""
    booleans = [var for var in env.VARS if var.kind is Kind.BOOL]
    assert {"DJANGO_DB_PREPARED", "DJANGO_DEBUG", "DJANGO_CONN_HEALTH_CHECKS"} <= {v.name for v in booleans}
    for var in booleans:
        assert var.value({var.name: "on"}) is True
        assert var.value({var.name: "Off"}) is False
        with pytest.raises(ConfigurationError):
            var.value({var.name: "maybe"})


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("DJANGO_DB_POOL_SIZE", "abc", "DJANGO_DB_POOL_SIZE='abc': expected an integer from 0 to 1000"),
        ("SESSIONS_MAX_PER_USER", "-1", "SESSIONS_MAX_PER_USER='-1': expected an integer from 1 to 100000"),
        ("DJANGO_DB_PREPARED", "maybe", "DJANGO_DB_PREPARED='maybe': expected true or false"),
        ("SESSIONS_IDLE_TIMEOUT", "0", "SESSIONS_IDLE_TIMEOUT='0': expected a duration of at least 1s"),
        (
            "SESSIONS_LOCKOUT_SECONDS",
            "31d",
            "SESSIONS_LOCKOUT_SECONDS='31d': expected a duration from 1s to 30d",
        ),
        (
            "SESSIONS_ASSURANCE_LEVEL",
            "LEVEL_3",
            "SESSIONS_ASSURANCE_LEVEL='LEVEL_3': expected one of LEVEL_1",
        ),
        ("SESSIONS_TRUSTED_PROXIES", "10.0.0.0/8,proxy", "SESSIONS_TRUSTED_PROXIES='10.0.0.0/8,proxy'"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "https", "expected `HEADER=value`"),
        ("SESSIONS_BASE_URL", "sessions.example.org", "expected an http(s) URL"),
        ("DJANGO_LOG_LEVEL", "LOUD", "expected one of DEBUG, INFO"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_form(name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        env.BY_NAME[name].value({name: text})
    assert caught.value.variable == name
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bounds_are_inclusive() -> None:
    var = env.BY_NAME["SESSIONS_SCRAM_ITERATIONS"]
    assert var.value({var.name: "1000"}) == 1000
    assert var.value({var.name: "5000000"}) == 5_000_000
    for text in ("999", "5000001"):
        with pytest.raises(ConfigurationError):
            var.value({var.name: text})


def test_durations_take_units_and_keep_whole_seconds_int() -> None:
    assert env.BY_NAME["SESSIONS_MAX_AGE"].value({"SESSIONS_MAX_AGE": "12h"}) == 43200
    assert env.BY_NAME["SESSIONS_MAX_AGE"].value({}) is None
    assert env.BY_NAME["SESSIONS_EVENT_POLL_INTERVAL"].value({"SESSIONS_EVENT_POLL_INTERVAL": "0.5"}) == 0.5


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("SESSIONS_FIELD_KEY", "short-hunter2", "SESSIONS_FIELD_KEY (value not shown): expected at least 32"),
        (
            "DATABASE_URL",
            "nonsense://user:hunter2@db/x",
            "DATABASE_URL (value not shown): expected a database",
        ),
    ],
)
def test_secrets_are_never_echoed(name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        env.BY_NAME[name].value({name: text})
    assert str(caught.value).startswith(message)
    assert "hunter2" not in str(caught.value)


def test_a_long_or_strange_value_is_quoted_short() -> None:
    with pytest.raises(ConfigurationError) as caught:
        env.BY_NAME["DJANGO_DEBUG"].value({"DJANGO_DEBUG": "x" * 500 + "\n\x1b[31m"})
    assert len(str(caught.value)) < 200
    assert "\n" not in str(caught.value)
    assert "\x1b" not in str(caught.value)


def test_a_secret_from_its_file(tmp_path: Path) -> None:
    var = env.BY_NAME["SESSIONS_NODE_SECRET"]
    secret = tmp_path / "node"
    secret.write_text("from-the-file\n")
    assert var.value({"SESSIONS_NODE_SECRET_FILE": str(secret)}) == "from-the-file"
    assert var.value({"SESSIONS_NODE_SECRET": "direct", "SESSIONS_NODE_SECRET_FILE": str(secret)}) == "direct"
    with pytest.raises(ConfigurationError, match=r"^SESSIONS_NODE_SECRET_FILE='.*missing': No such file"):
        var.value({"SESSIONS_NODE_SECRET_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="the file is empty"):
        var.value({"SESSIONS_NODE_SECRET_FILE": str(tmp_path / "empty")})


def test_a_secret_file_is_checked_like_the_variable(tmp_path: Path) -> None:
    short = tmp_path / "field-key"
    short.write_text("too-short")
    with pytest.raises(ConfigurationError) as caught:
        env.BY_NAME["SESSIONS_FIELD_KEY"].value({"SESSIONS_FIELD_KEY_FILE": str(short)})
    assert str(caught.value).startswith("SESSIONS_FIELD_KEY_FILE's contents (value not shown)")
    assert "too-short" not in str(caught.value)


def test_a_file_variable_must_name_a_readable_file(tmp_path: Path) -> None:
    var = env.BY_NAME["SESSIONS_GEOIP_PATH"]
    database = tmp_path / "City.mmdb"
    database.write_bytes(b"")
    assert var.value({var.name: str(database)}) == str(database)
    for path in (tmp_path / "missing.mmdb", tmp_path):
        with pytest.raises(ConfigurationError, match="expected the path of a readable file"):
            var.value({var.name: str(path)})


def _bad_value(var: Var) -> str | None:
    """A value ``var`` must refuse, or None when its type accepts any text."""
    if var.rule is not None:
        return {Kind.LIST: "not-an-address"}.get(var.kind, "x")
    return {
        Kind.BOOL: "maybe",
        Kind.INT: "abc",
        Kind.FLOAT: "abc",
        Kind.DURATION: "soon",
        Kind.CHOICE: "NOT_A_CHOICE",
        Kind.PATH: "/nonexistent/file" if var.must_exist else None,
    }.get(var.kind)


@pytest.mark.parametrize("var", env.VARS, ids=lambda var: var.name)
def test_a_bad_value_of_every_variable_stops_loading(var: Var) -> None:
    """Issue 20's acceptance: every variable, not only the two it names."""
    bad = _bad_value(var)
    if bad is None:
        assert var.kind in (Kind.STR, Kind.LIST, Kind.PATH)  # any text is a value
        return
    with pytest.raises(ConfigurationError) as caught:
        env.load({var.name: bad}, readers=ALL_READERS)
    assert caught.value.variable == var.name
    assert str(caught.value).startswith(var.name)
    assert "\n" not in str(caught.value)
    if not set(var.read_by) & env.PYTHON_READERS:
        env.load({var.name: bad})  # a script's variable does not stop the settings


def test_numbers_have_bounds() -> None:
    """``SESSIONS_MAX_PER_USER=-1`` is an error: no number is unbounded below."""
    for var in env.VARS:
        if var.kind in (Kind.INT, Kind.FLOAT, Kind.DURATION):
            assert var.minimum is not None, var.name


def test_load_reports_the_first_bad_variable_and_names_the_others() -> None:
    with pytest.raises(ConfigurationError) as caught:
        env.load({"DJANGO_DB_POOL_SIZE": "abc", "SESSIONS_MAX_PER_USER": "-1", "DJANGO_DB_PREPARED": "maybe"})
    message = str(caught.value)
    assert message.startswith("DJANGO_DB_POOL_SIZE='abc'")
    assert message.endswith("(also invalid: DJANGO_DB_PREPARED, SESSIONS_MAX_PER_USER)")


def test_load_reads_every_python_variable_and_nothing_of_the_scripts() -> None:
    values = env.load({})
    assert set(values) == {var.name for var in env.VARS if set(var.read_by) & env.PYTHON_READERS}


# --- The secret key --------------------------------------------------------------------------------


def test_secret_key_from_the_variable_first(tmp_path: Path) -> None:
    generated = tmp_path / "secret_key"
    generated.write_text("generated\n")
    assert env.secret_key("given", debug=False, generated=generated) == "given"


def test_secret_key_from_the_file_bin_serve_generates(tmp_path: Path) -> None:
    generated = tmp_path / "secret_key"
    generated.write_text("generated-by-bin-serve\n")
    assert env.secret_key("", debug=False, generated=generated) == "generated-by-bin-serve"
    assert env.secret_key("", debug=True, generated=generated) == "generated-by-bin-serve"


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_no_secret_key_refuses_to_start_outside_debug(tmp_path: Path, content: str | None) -> None:
    generated = tmp_path / "secret_key"
    if content is not None:
        generated.write_text(content)
    with pytest.raises(ConfigurationError) as caught:
        env.secret_key("", debug=False, generated=generated)
    assert caught.value.variable == "DJANGO_SECRET_KEY"
    assert "set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE" in str(caught.value)
    assert env.secret_key("", debug=True, generated=generated) == env.INSECURE_DEVELOPMENT_KEY


def test_check_validates_the_scripts_variables_and_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "secret_key"
    env.check({"DJANGO_SECRET_KEY": "x"}, generated=missing)
    with pytest.raises(ConfigurationError, match="^WEB_CONCURRENCY="):
        env.check({"DJANGO_SECRET_KEY": "x", "WEB_CONCURRENCY": "many"}, generated=missing)
    with pytest.raises(ConfigurationError, match="no secret key"):
        env.check({}, generated=missing)


# --- Start-up, in processes of their own ---------------------------------------------------------


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: only what the test means, not the suite's own variables."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "DJANGO_SECRET_KEY": "x",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **extra,
    }


def _run(argv: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, *argv],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_DB_POOL_SIZE", "abc"),
        ("SESSIONS_MAX_PER_USER", "-1"),
        ("DJANGO_DB_PREPARED", "maybe"),
        ("SESSIONS_LOCKOUT_WINDOW", "soon"),
        ("DATABASE_URL", "nonsense://x"),
        ("DJANGO_SECRET_KEY_FILE", "/nonexistent/secret_key"),
    ],
)
def test_manage_py_stops_with_one_line_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    environment = _environment(tmp_path, **{name: value})
    if name == "DJANGO_SECRET_KEY_FILE":
        del environment["DJANGO_SECRET_KEY"]
    done = _run(["manage.py", "check"], environment)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {name}"), lines[0]
    assert done.stdout == ""


def test_manage_py_runs_with_good_values(tmp_path: Path) -> None:
    done = _run(
        ["manage.py", "check"],
        _environment(
            tmp_path, DJANGO_DB_PREPARED="on", SESSIONS_MAX_AGE="12h", SESSIONS_TRUSTED_PROXIES="10.0.0.0/8"
        ),
    )
    assert done.returncode == 0, done.stderr


def test_on_means_true_for_the_prepared_statements_too(tmp_path: Path) -> None:
    probe = "import project.settings as s; print(s.DATABASES['default']['OPTIONS'].get('prepare_threshold'))"
    url = "postgres://nobody@127.0.0.1:1/none"  # parsed only: nothing connects
    on = _run(["-c", probe], _environment(tmp_path, DATABASE_URL=url, DJANGO_DB_PREPARED="on"))
    off = _run(["-c", probe], _environment(tmp_path, DATABASE_URL=url, DJANGO_DB_PREPARED="off"))
    assert (on.stdout.strip(), off.stdout.strip()) == ("5", "None"), on.stderr + off.stderr


def test_python_m_project_env_check_covers_the_scripts_variables(tmp_path: Path) -> None:
    done = _run(["-m", "project.env", "--check"], _environment(tmp_path, GUNICORN_TIMEOUT="1m"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: GUNICORN_TIMEOUT='1m': expected an integer from 1 to 86400",
    ]
    assert _run(["-m", "project.env", "--check"], _environment(tmp_path)).returncode == 0


def test_python_m_project_env_markdown_prints_the_table(tmp_path: Path) -> None:
    done = _run(["-m", "project.env", "--markdown"], _environment(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == env.markdown()
