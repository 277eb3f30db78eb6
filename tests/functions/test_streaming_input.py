"""streaming function: a malformed resume position is a clear 400, live run or finished run."""

from __future__ import annotations

import httpx
import pytest

from agent_patterns.runs import events
from agent_patterns_dev.gateway import load_function
from tests.functions.test_streaming import new_run

BAD_IDS = {
    "letters": "abc",
    "negative": "-5",
    "10,000 digits": "9" * 10_000,
    "past 64 bits": "18446744073709551616-0",
    "non-ASCII digits": "\u0661\u0662-0",
    "NUL": "12-\x00",
}


@pytest.mark.parametrize("finished", [False, True], ids=["live run", "finished run"])
@pytest.mark.parametrize("case", list(BAD_IDS))
async def test_a_malformed_last_event_id_is_refused_before_the_stream_starts(finished: bool, case: str) -> None:
    run_id, token = await new_run()
    if finished:
        await events.publish(run_id, "complete", {})
    bad = BAD_IDS[case]
    as_header = bad.isascii() and "\x00" not in bad and len(bad) < 4000  # what an HTTP header can carry
    params = {"token": token, **({} if as_header else {"lastEventId": bad})}
    headers = {"Last-Event-ID": bad} if as_header else {}
    transport = httpx.ASGITransport(app=load_function("streaming").app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        response = await client.get(f"/v1/runs/{run_id}/events", params=params, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"
    assert "event id" in response.json()["error"]["message"]
