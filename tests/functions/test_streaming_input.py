"""streaming function: a malformed resume position is a clear 422, live run or finished run."""

from __future__ import annotations

import httpx
import pytest

from agent_patterns.runs import events
from agent_patterns_dev.gateway import load_function
from tests.functions.test_streaming import new_run


@pytest.mark.parametrize("finished", [False, True], ids=["live run", "finished run"])
@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_malformed_last_event_id_is_refused_before_the_stream_starts(finished: bool, how: str) -> None:
    run_id, token = await new_run()
    if finished:
        await events.publish(run_id, "complete", {})
    bad = "not-an-id\x00"
    params = {"token": token, **({"lastEventId": bad} if how == "query" else {})}
    headers = {"Last-Event-ID": "12-x"} if how == "header" else {}
    transport = httpx.ASGITransport(app=load_function("streaming").app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        response = await client.get(f"/v1/runs/{run_id}/events", params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert "event id" in response.json()["error"]["message"]
