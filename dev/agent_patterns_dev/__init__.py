"""Developer tools for agent-patterns: the `agent-patterns` command, the local dev server, the
local API Gateway and Lambda emulation, and the embedded Redis and Postgres.

Not part of the Lambda layer: nothing under `layers/` imports this package.
"""
