#!/bin/bash
# Lambda Web Adapter entry point (Handler: run.sh, AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap):
# uvicorn serves the FastAPI app, the adapter streams its responses to the function URL.
PATH=$PATH:$LAMBDA_TASK_ROOT/bin \
PYTHONPATH=$PYTHONPATH:/opt/python:$LAMBDA_RUNTIME_DIR \
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8000}}" --no-access-log \
  --timeout-graceful-shutdown 2 streaming_handler:app
