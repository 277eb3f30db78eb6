"""Settings of webhook deliveries (the webhook function, and every function that ends runs)."""

from __future__ import annotations

from pydantic import Field

from agent_patterns.config import FunctionSettings, settings_of

# SQS refuses a longer DelaySeconds: no retry waits longer than this.
MAX_RETRY_DELAY_S = 900


class WebhookSettings(FunctionSettings):
    """Queues, timeout and retries of webhook deliveries."""

    webhook_queue_url: str | None = Field(
        None, description="SQS queue of webhook deliveries; unset locally: delivered in-process."
    )
    webhook_dead_letter_queue_url: str | None = Field(
        None, description="SQS queue a delivery goes to after its last attempt; unset locally: logged and dropped."
    )
    webhook_queue_send_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description="Seconds SQS has to take a delivery message (to connect, then to answer; two tries): a run's "
        "ending waits no longer, and what SQS did not take stays in the outbox.",
    )
    webhook_outbox_sweep_after_seconds: int = Field(
        60,
        ge=1,
        le=86_400,
        description="A delivery still in the outbox this long after its last send is queued again by the sweep "
        "(every minute, with the run reaper).",
    )
    webhook_timeout_seconds: float = Field(
        15.0, gt=0, le=60, description="Seconds one delivery may take: resolving, connecting, the receiver's answer."
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Deliveries tried per event and endpoint before it is dead-lettered."
    )
    webhook_retry_base_seconds: float = Field(
        5.0,
        ge=0,
        le=MAX_RETRY_DELAY_S,
        description="Wait before the first retry; each later one waits 4 times longer (±20% jitter, at most 900 s).",
    )
    webhook_delivered_ttl_seconds: int = Field(
        7 * 86_400,
        ge=60,
        description="How long delivered event ids are remembered: a message redelivered within it is not sent again.",
    )


def webhook_settings() -> WebhookSettings:
    return settings_of(WebhookSettings)
