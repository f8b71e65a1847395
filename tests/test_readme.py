"""The README works as written (issue 20): its runnable blocks, its links, and what the operations
guide promises of ``bin/serve``.

**The runnable blocks.** Every shell block of README.md preceded by ``<!-- runnable -->`` (the first
administrator, demo data, the first calls) runs, in order, in one ``bash -e -o pipefail``, from a
fresh copy of the tree while the service runs as the README starts it: ``./bin/serve`` from that
copy, with none of the project's variables set. The copy is what a clone would check out — the tree
less ``.git`` and what ``.gitignore`` names (``var/``, ``.venv/``, caches) — so the database, the
generated secret key and the static files are new, and the blocks prove that ``manage.py`` finds
the key ``bin/serve`` generated. Two things are not new: the copy's ``.venv`` is this checkout's,
borrowed entry by entry (installing the project again would take minutes and the network), so the
test runs when that venv satisfies ``pyproject.toml`` and is skipped, saying what is missing, when
it does not (``bin/test`` installs it); and the documented address, ``127.0.0.1:8000``, is replaced
by a free port in the blocks and in ``BIND``. Then the service is restarted with
``SKIP_MIGRATE=1`` on the same database, as a second host would be.

**The links.** Every relative link of README.md, CONTRIBUTING.md, CHANGELOG.md and ``docs/*.md``
names a file of the tree, and a ``#fragment`` names a heading of the Markdown file it points to
(GitHub's rule for turning a heading into an anchor).
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.integration.servers import assert_serve_refuses, free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN = [README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
RUNNABLE = re.compile(r"^<!-- runnable -->\n```(?:sh|bash)\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
#: The first start migrates a new database and collects the static files: generous on a busy machine.
STARTUP_TIMEOUT = 240.0
#: Prefixes and names of the variables the project reads (docs/configuration.md): none may leak from
#: the test run (its DJANGO_SECRET_KEY, DATABASE_URL, SQLITE_TEST_NAME ...) into "a fresh machine".
PROJECT_PREFIXES = ("DJANGO_", "SESSIONS_", "TLS_", "SQLITE_", "PG_", "EMAIL_")
PROJECT_NAMES = frozenset(
    {
        "DATABASE_URL",
        "DEFAULT_FROM_EMAIL",
        "BIND",
        "SOCKET",
        "CONTROL_SOCKET",
        "WEB_CONCURRENCY",
        "GUNICORN_TIMEOUT",
        "SKIP_MIGRATE",
        "PYTHON",
        "VENV_EXTRAS",
    }
)


def runnable_blocks(markdown: str) -> list[str]:
    return RUNNABLE.findall(markdown)


def fresh_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any variable the project reads, plus ``extra``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(PROJECT_PREFIXES) and name not in PROJECT_NAMES
    }
    return environment | extra


# --- a fresh copy of the tree ----------------------------------------------------------------------


def gitignored(root: Path) -> Callable[[str, list[str]], set[str]]:
    """A `shutil.copytree` filter leaving out ``.git`` and what ``root/.gitignore`` names (its
    patterns are simple: names, ``*.ext``, and directory paths from the root)."""
    patterns = [
        line.strip()
        for line in (root / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).resolve().relative_to(root)
        left_out = {".git"} & set(names)
        for name in names:
            path = (relative / name).as_posix()
            for pattern in patterns:
                bare = pattern.rstrip("/")
                anchored = "/" in bare
                if fnmatch.fnmatch(path if anchored else name, bare.lstrip("/")):
                    left_out.add(name)
        return left_out

    return ignore


def unmet_requirements() -> list[str]:
    """What ``pyproject.toml`` requires (dependencies and the dev extra) that this venv lacks."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    unmet = []
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(text)
    return unmet


def borrow_venv(target: Path) -> None:
    """``target/.venv``: this checkout's venv, entry by entry, with the mark ``bin/_venv.sh`` leaves
    once a venv holds this ``pyproject.toml`` and the dev extras -- so that the copy's ``bin/serve``
    finds it installed and never runs pip (which would point the shared editable install at the
    copy). The caller has checked that the venv does satisfy ``pyproject.toml``."""
    venv = target / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if not entry.name.startswith(".installed-"):
            (venv / entry.name).symlink_to(entry)
    digest = hashlib.sha256((target / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / f".installed-{digest}-dev").touch()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree as a clone would have it, using this checkout's installed venv."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"the tests run outside {ROOT / '.venv'}, the venv bin/serve would use")
    unmet = unmet_requirements()
    if unmet:
        pytest.skip(f"{ROOT / '.venv'} lacks {', '.join(unmet)} (./bin/test installs pyproject.toml)")
    if shutil.which("curl") is None or shutil.which("jq") is None:
        pytest.skip("the README's first calls need curl and jq (apt-get install curl jq)")
    target = tmp_path_factory.mktemp("readme") / "checkout"
    shutil.copytree(ROOT, target, ignore=gitignored(ROOT), symlinks=True)
    borrow_venv(target)
    return target


# --- the service as the README starts it -----------------------------------------------------------


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:  # not listening yet
        return False
    finally:
        connection.close()


def start(checkout: Path, log: Path, **extra: str) -> Service:
    """``./bin/serve`` in ``checkout`` on a free port; returns once ``/healthz`` answers 200."""
    port = free_port()
    environment = fresh_environment(BIND=f"127.0.0.1:{port}", VENV_EXTRAS="dev", **extra)
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            ["./bin/serve"],
            cwd=checkout,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole, whatever it runs
        )
    service = Service(process, port, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(service)
            pytest.fail(f"./bin/serve did not start:\n{service.output()[-4000:]}")
        time.sleep(0.2)
    return service


def stop(service: Service) -> None:
    if service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGTERM)
        try:
            service.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait(timeout=10)


@pytest.fixture(scope="module")
def service(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    started = start(checkout, tmp_path_factory.mktemp("readme-logs") / "serve.log")
    try:
        yield started
    finally:
        stop(started)


# --- the runnable blocks -----------------------------------------------------------------------------


def test_the_readme_marks_its_first_steps_runnable() -> None:
    text = README.read_text()
    assert "./bin/serve" in text
    script = "\n".join(runnable_blocks(text))
    for step in (
        "createsuperuser",
        "seed_demo",
        "auth.login_ex",
        "auth.sessions",
        "api_key.create",
        "Bearer",
    ):
        assert step in script, step
    assert "websockets" in script
    assert script.count(DOCUMENTED_ADDRESS) >= 5


def test_readme_blocks_run_in_order_against_a_fresh_service(
    checkout: Path, service: Service, tmp_path: Path
) -> None:
    blocks = runnable_blocks(README.read_text())
    script = tmp_path / "readme.sh"
    script.write_text("\n\n".join(blocks).replace(DOCUMENTED_ADDRESS, f"127.0.0.1:{service.port}") + "\n")
    done = subprocess.run(  # noqa: S603 - fixed argv
        ["bash", "-e", "-o", "pipefail", str(script)],
        cwd=checkout,
        env=fresh_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"a README block failed (exit {done.returncode})\n--- stdout\n{done.stdout[-4000:]}\n"
        f"--- stderr\n{done.stderr[-4000:]}\n--- server\n{service.output()[-3000:]}"
    )
    # The blocks' manage.py commands ran without a key variable: they used the generated key.
    assert (checkout / "var" / "secret_key").exists()
    assert "Operations to perform" in service.output()  # the first start migrated

    # A restart as on a second host: no migration, the same database and key, serving at once.
    stop(service)
    again = start(checkout, tmp_path / "serve-again.log", SKIP_MIGRATE="1")
    try:
        assert "Operations to perform" not in again.output()
        assert "Applying" not in again.output()
    finally:
        stop(again)


def test_skip_migrate_refuses_a_database_behind_the_code(checkout: Path, tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argv
        ["./bin/serve"],
        cwd=checkout,
        env=fresh_environment(
            SKIP_MIGRATE="1",
            VENV_EXTRAS="dev",
            DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}",
            DJANGO_SECRET_KEY="x",
            BIND=f"127.0.0.1:{free_port()}",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stderr.endswith(
        "bin/serve: SKIP_MIGRATE is set but the database has unapplied migrations: "
        "run manage.py migrate once, from one host\n"
    ), done.stderr
    assert "Listening at" not in done.stdout + done.stderr


# --- bin/serve's refusals before anything starts (no venv, no copy needed) -------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DATABASE_URL": "postgres://sessions@db.internal:5432/sessions"}, "DJANGO_SECRET_KEY_FILE"),
        ({"SKIP_MIGRATE": "perhaps"}, "SKIP_MIGRATE"),
    ],
)
def test_bin_serve_refuses_before_anything_starts(tmp_path: Path, env: dict[str, str], named: str) -> None:
    """A shared database without a key variable (each host would make its own key and sign
    everybody out), or a switch it cannot read: one line, exit status 2, nothing created."""
    assert_serve_refuses(fresh_environment(BIND=f"127.0.0.1:{free_port()}", **env), tmp_path, named)
    assert list(tmp_path.iterdir()) == []


# --- links ---------------------------------------------------------------------------------------


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(markdown: str) -> str:
    """``markdown`` without code: fenced blocks and inline code hold no links."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: its text, lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE)  # http:, mailto: ...
    ]


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    dead = []
    for target in relative_links(document):
        file_part, _, fragment = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists() or not linked.is_relative_to(ROOT):
            dead.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked.read_text()):
            dead.append(f"{target}: no heading #{fragment} in {linked.relative_to(ROOT)}")
    assert not dead, f"{document.relative_to(ROOT)}: " + "; ".join(dead)


def test_the_link_checker_sees_links_and_headings() -> None:
    """The checker itself: a dead link or a missing heading would be found."""
    assert anchor("3. Behind a reverse proxy") == "3-behind-a-reverse-proxy"
    assert anchor("API keys with `SCRAM`") == "api-keys-with-scram"
    assert anchor("Issue 20 — the first hour") == "issue-20--the-first-hour"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
    text = "[x](docs/a.md#b) ![i](img.png) `[no](code.md)` [web](https://example.org)\n```\n[no](f.md)\n```"
    assert LINK.findall(prose(text)) == ["docs/a.md#b", "img.png", "https://example.org"]
    assert relative_links(README)  # the README does link to the rest
