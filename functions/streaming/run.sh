#!/bin/sh
# Lambda Web Adapter entry point: uvicorn serves the app; the adapter streams its responses.
PATH=/var/runtime:$PATH
exec python -m uvicorn --host 127.0.0.1 --port "${PORT:-8000}" --no-access-log streaming_handler:app
