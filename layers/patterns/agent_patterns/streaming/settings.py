"""Settings of the streaming function."""

from __future__ import annotations

from pydantic import Field

from agent_patterns.config import FunctionSettings, settings_of


class StreamingSettings(FunctionSettings):
    """Heartbeats, reconnect hints and stream length of Server-Sent Events."""

    sse_heartbeat_seconds: float = Field(
        15.0, gt=0, description="Seconds of silence after which a heartbeat event is sent (keeps proxies open)."
    )
    sse_retry_ms: int = Field(2000, ge=100, description="Reconnect delay suggested to SSE clients.")
    sse_max_stream_seconds: float = Field(840.0, gt=0, description="Streams end (cleanly) after this long.")


def streaming_settings() -> StreamingSettings:
    return settings_of(StreamingSettings)
