#!/bin/bash
# Lambda Web Adapter entry point of LlmStreamFunction (Handler: run.sh,
# AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap): uvicorn serves the llm app, the adapter streams its
# responses (token streams of POST /v1/chat/completions) to the function URL as they are written.
PATH=$PATH:$LAMBDA_TASK_ROOT/bin \
PYTHONPATH=$PYTHONPATH:/opt/python:$LAMBDA_RUNTIME_DIR \
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8000}}" --no-access-log \
  --timeout-graceful-shutdown 2 llm_handler:app
