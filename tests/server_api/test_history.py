"""Tests of reading an identity's retained events over the server API, page by page."""

from __future__ import annotations

import pytest

from tests.harness.server_api import IDENTITY, ServerApiClient, assert_error_shape

pytestmark = [pytest.mark.slow, pytest.mark.server_api]


def test_history_pages_through_the_retained_events(api: ServerApiClient) -> None:
    """Pages of `limit` events follow each other through nextAfter, in order, ending with nextAfter null."""
    published = api.batch(
        [{"identity": IDENTITY, "type": "callHeld", "data": {"callId": f"c-{n}"}} for n in range(5)]
    ).json()["results"]
    ids = [r["eventId"] for r in published]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = api.request("GET", f"/identities/{IDENTITY}/events", params=params).json()
        pages += 1
        seen += [event["eventId"] for event in page["events"]]
        after = page["nextAfter"]
        if after is None:
            break
    assert seen == ids
    assert pages == 3
    first = api.request("GET", f"/identities/{IDENTITY}/events", params={"after": ids[0], "limit": 1}).json()
    event = first["events"][0]
    assert event["eventId"] == ids[1]
    assert (event["identity"], event["type"], event["sequenceNumber"]) == (IDENTITY, "callHeld", 2)
    assert event["data"] == {"callId": "c-1"}


def test_history_of_an_identity_without_events_is_empty(api: ServerApiClient) -> None:
    """An identity with nothing retained answers an empty page."""
    page = api.request("GET", f"/identities/{IDENTITY}/events").json()
    assert page == {"identity": IDENTITY, "events": [], "nextAfter": None}


@pytest.mark.parametrize(
    "params",
    [
        {"after": "yesterday"},
        {"after": "18446744073709551616-0"},
        {"after": "1-18446744073709551616"},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "many"},
    ],
)
def test_bad_cursor_or_limit_is_400(api: ServerApiClient, params: dict[str, object]) -> None:
    """A malformed eventId, one whose parts exceed 2^64-1, or a limit outside 1..1000 is a 400 naming the parameter."""
    body = assert_error_shape(api.request("GET", f"/identities/{IDENTITY}/events", params=params), 400)
    (name,) = params
    assert body["message"].startswith(f"{name}: ") or f"parameter '{name}'" in body["message"]


def test_largest_event_id_is_accepted(api: ServerApiClient) -> None:
    """An eventId of two 2^64-1 parts is well formed and simply has nothing after it."""
    top = f"{2**64 - 1}-{2**64 - 1}"
    response = api.request("GET", f"/identities/{IDENTITY}/events", params={"after": top})
    assert response.status_code == 200, response.text
    assert response.json()["events"] == []
