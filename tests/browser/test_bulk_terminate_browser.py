"""Bulk termination in Chromium (issue 17): the confirmation page's script posts batch by batch with a
progress bar and a disabled button, the typed number is checked by the server, and without
JavaScript the same form ends everything in one request. No page breaks the Content-Security-Policy.

Each batch request is held (``page.route``) while the test looks at the page, then let through: the
test never waits on time, only on requests and on the page's state.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sessions_app.auth.roles import Role
from sessions_app.models import Credentials, EndReason, Token, UserSession
from tests.conftest import PASSWORD
from tests.factories import FAR_FUTURE, session

pytestmark = pytest.mark.django_db(transaction=True)

expect = pytest.importorskip("playwright.sync_api").expect
CSP = re.compile(r"Refused to|Content Security Policy", re.IGNORECASE)


def sign_in(page: Any, username: str) -> None:
    page.goto("/sign-in/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(sessions|me/sessions)/$"))


def saved(**fields: Any) -> UserSession:
    row = session(**fields)
    row.save()
    return row


def derived(parent: UserSession, **fields: Any) -> UserSession:
    token = Token.objects.create(token_hash=secrets.token_hex(32), session=parent, expires_at=FAR_FUTURE)
    return saved(
        credentials=Credentials.TOKEN,
        parent=parent,
        token=token,
        root_credentials=parent.credentials,
        **fields,
    )


#: A form answered with its errors is a 400, as everywhere in the app; Chromium logs that.
FORM_ERROR = "Failed to load resource: the server responded with a status of 400"


@pytest.fixture
def console(page: Any) -> Iterator[list[str]]:
    """Console messages of ``page``: afterwards, none may be a CSP violation or an unexpected error."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(f"{message.type}: {message.text}"))
    yield seen
    problems = [
        line for line in seen if CSP.search(line) or (line.startswith("error") and FORM_ERROR not in line)
    ]
    assert problems == []


def is_batch(request: Any) -> bool:
    return request.method == "POST" and "/sessions/terminate-matching/" in request.url


def test_the_page_ends_the_selection_batch_by_batch_with_a_progress_bar(
    page: Any, create_user: Callable[..., Any], shot: Any, console: list[str]
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    rows = [saved(username=f"u{i}", origin=f"10.6.0.{i}:5") for i in range(5)]
    child = derived(rows[1], username="u1", origin="172.16.0.1:5")
    sign_in(page, "op")
    page.goto("/sessions/?origin=10.6.")
    page.get_by_role("link", name=re.compile("matching these filters")).click()
    expect(
        page.get_by_role("heading", name="Terminate the 5 sessions matching these filters?")
    ).to_be_visible()
    expect(page.locator("#bulk-cascade")).to_have_text("1")
    shot(page, "bulk-terminate-confirm")
    form = page.locator("form[data-bulk-terminate]")
    form.evaluate("form => { form.dataset.batchSize = '2'; }")  # three batches of 5
    held: list[Any] = []
    page.route("**/sessions/terminate-matching/", lambda route: held.append(route))
    button = page.get_by_role("button", name="Terminate these sessions")
    progress = page.locator("#bulk-progress")

    with page.expect_request(is_batch):
        button.click()
    expect(button).to_be_disabled()
    expect(progress).to_be_visible()
    batches = 1
    seen_values = []
    while True:
        # The next batch, or the page going to the result after the last one.
        with page.expect_request(lambda r: is_batch(r) or r.is_navigation_request()) as next_request:
            held.pop().continue_()
        if not is_batch(next_request.value):
            break
        batches += 1
        # Between two batches: the button stays disabled, the bar shows what ended.
        expect(button).to_be_disabled()
        seen_values.append(progress.evaluate("bar => bar.value"))
        if batches == 2:
            shot(page, "bulk-terminate-progress")
        assert batches <= 5
    page.unroute("**/sessions/terminate-matching/")
    page.wait_for_url(re.compile(r"/sessions/\?origin=10\.6\.$"))
    assert batches == 3
    assert seen_values == [2, 4]
    expect(page.get_by_role("status").first).to_contain_text(
        "5 sessions terminated, and 1 token session that came from them."
    )
    assert all(UserSession.objects.get(pk=r.pk).end_reason == EndReason.TERMINATED for r in rows)
    assert UserSession.objects.get(pk=child.pk).end_reason == EndReason.PARENT_ENDED


def test_a_wrong_typed_number_is_shown_next_to_the_field(
    page: Any, create_user: Callable[..., Any], shot: Any, console: list[str]
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    UserSession.objects.bulk_create(session(username=f"b{i}", origin="10.4.0.1:5") for i in range(101))
    sign_in(page, "op")
    page.goto("/sessions/terminate-matching/?origin=10.4.")
    field = page.get_by_label("Type 101 to confirm")
    field.fill("10")
    page.get_by_role("button", name="Terminate these sessions").click()
    expect(page.locator("#id_typed_error")).to_contain_text("That is not 101")
    shot(page, "bulk-terminate-typed-wrong")
    assert not UserSession.objects.filter(origin="10.4.0.1:5", ended_at__isnull=False).exists()
    page.get_by_label("Type 101 to confirm").fill("101")
    page.get_by_role("button", name="Terminate these sessions").click()
    page.wait_for_url(re.compile(r"/sessions/\?origin=10\.4\.$"))
    expect(page.get_by_role("status").first).to_contain_text("101 sessions terminated.")
    assert UserSession.objects.filter(origin="10.4.0.1:5", ended_at__isnull=True).count() == 0


def test_without_javascript_one_request_ends_them_all(
    chromium: Any, base_url: str, create_user: Callable[..., Any]
) -> None:
    create_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    parents = [saved(username=f"p{i}") for i in range(3)]
    children = [derived(p, username=p.username) for p in parents[:2]]
    context = chromium.new_context(base_url=base_url, java_script_enabled=False)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in(page, "op")
        page.goto("/sessions/terminate-others/")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.get_by_role("button", name="Terminate other sessions").click()
        page.wait_for_url(re.compile(r"/sessions/$"))
        expect(page.get_by_role("status").first).to_contain_text(
            "3 other sessions terminated, and 2 token sessions that came from them."
        )
        assert len(posts) == 1
    finally:
        context.close()
    assert all(UserSession.objects.get(pk=c.pk).end_reason == EndReason.PARENT_ENDED for c in children)
