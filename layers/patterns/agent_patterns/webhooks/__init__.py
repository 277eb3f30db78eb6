"""Webhooks of run endings (Standard Webhooks): `outbox` queues a delivery per endpoint when a
run reaches `complete` or `error`, `delivery` signs and POSTs each (retries, dead letters,
at most one 2xx per event and endpoint), `store` keeps the tenant's secret, default endpoints
and event bodies, `targets` applies the crawler's egress rule (public addresses only).

Nothing is imported here: `runs.events.transition` imports `webhooks.outbox` when a run ends.
"""
