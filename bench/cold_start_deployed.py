"""The environment of a deployed function, on this machine, for bench/cold_start.py --deployed.

Secrets Manager and SQS are moto's ThreadedMotoServer (boto3 reaches it through
AWS_ENDPOINT_URL, with fake credentials, region us-east-1); the secrets hold the URLs of real
backends (the embedded Redis and Postgres in a temporary folder), the auth key and the provider
keys; the providers are the OpenAI/Anthropic stub (bench/llm_stub_app.py) under uvicorn. A
function sees only the *_SECRET_ARN variables, as template.yaml gives them.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
# Variables of the developer's shell that would bypass the secrets or reach a real account.
DROPPED = (
    "REDIS_URL",
    "DATABASE_URL",
    "AUTH_SECRET",
    "AUTH_MODE",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "POWERTOOLS_METRICS_DISABLED",
    "POWERTOOLS_TRACE_DISABLED",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.05)


def function_environment(
    endpoint: str, arns: dict[str, str], queue_url: str, stub_url: str, function: str
) -> dict[str, str]:
    """What template.yaml gives `function` (Globals plus its own variables), secrets as ARNs."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(FAKE_CREDENTIALS)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_LAMBDA_FUNCTION_NAME=f"agent-patterns-{function}-bench",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512" if function == "streaming" else "1024",
        STAGE="bench",
        AUTH_MODE="apigateway",
        TENANT_CLAIM="tenant_id",
        POWERTOOLS_LOG_LEVEL="INFO",
        POWERTOOLS_METRICS_NAMESPACE="AgentPatterns",
        POWERTOOLS_SERVICE_NAME=function,
        **arns,
    )
    if function == "llm":
        env.update(LLM_DAILY_TOKEN_BUDGET="1000000000", LLM_TOTAL_TIMEOUT_SECONDS="25")
    if function in ("llm", "search"):  # the stub stands in for the providers (no internet here)
        env.update(OPENAI_BASE_URL=f"{stub_url}/v1", ANTHROPIC_BASE_URL=stub_url)
    if function == "search":
        env.update(EMBEDDING_DIMENSIONS="1536")
        env.pop("ANTHROPIC_API_KEY_SECRET_ARN", None)  # the search function is not given it
    if function not in ("llm", "search"):
        env.pop("OPENAI_API_KEY_SECRET_ARN", None)
        env.pop("ANTHROPIC_API_KEY_SECRET_ARN", None)
    if function == "crawl":
        env.update(CRAWL_QUEUE_URL=queue_url, STREAM_BASE_URL="https://stream.example.com/")
    if function == "streaming":
        env.update(
            SSE_MAX_STREAM_SECONDS="280",
            JWT_ISSUER="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE",
            JWT_AUDIENCE="agent-patterns",
        )
    return env


@contextmanager
def deployed_services() -> Iterator[tuple[str, dict[str, str], str, str]]:
    """Start the backends, moto and the provider stub; yields (endpoint, ARN variables, queue URL,
    stub URL). Everything started here is stopped on the way out."""
    import boto3
    from moto.server import ThreadedMotoServer

    from agent_patterns.config import reset_settings
    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_backends

    data_dir = Path(tempfile.mkdtemp(prefix="agent-patterns-coldstart-"))
    for var in DROPPED:
        os.environ.pop(var, None)
    for var in ("REDIS_URL_SECRET_ARN", "DATABASE_URL_SECRET_ARN"):
        os.environ.pop(var, None)
    reset_settings()
    moto: ThreadedMotoServer | None = None
    stub: subprocess.Popen[bytes] | None = None
    try:
        export_backends(data_dir)
        moto_port, stub_port = free_port(), free_port()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access log line per request
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        endpoint = f"http://127.0.0.1:{moto_port}"
        stub = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "llm_stub_app:app", "--port", str(stub_port), "--log-level", "warning"],
            cwd=ROOT / "bench",
        )
        _wait_for_port(moto_port, "moto")
        _wait_for_port(stub_port, "the provider stub")
        aws = {"region_name": REGION, "endpoint_url": endpoint, "aws_access_key_id": "testing"}
        sm = boto3.client("secretsmanager", aws_secret_access_key="testing", **aws)
        values = {
            "REDIS_URL_SECRET_ARN": os.environ["REDIS_URL"],
            "DATABASE_URL_SECRET_ARN": os.environ["DATABASE_URL"],
            "AUTH_SECRET_ARN": secrets.token_hex(32),
            "OPENAI_API_KEY_SECRET_ARN": "sk-bench-openai",
            "ANTHROPIC_API_KEY_SECRET_ARN": "sk-bench-anthropic",
        }
        arns = {}
        for var, value in values.items():
            name = f"agent-patterns/bench/{var.removesuffix('_SECRET_ARN').lower()}"
            arns[var] = sm.create_secret(Name=name, SecretString=value)["ARN"]
        sqs = boto3.client("sqs", aws_secret_access_key="testing", **aws)
        queue_url = sqs.create_queue(QueueName="agent-patterns-crawl-bench")["QueueUrl"]
        for var in ("REDIS_URL", "DATABASE_URL"):  # the children find them through the secrets only
            os.environ.pop(var, None)
        yield endpoint, arns, queue_url, f"http://127.0.0.1:{stub_port}"
    finally:
        if stub is not None:
            stub.terminate()
            stub.wait(10)
        if moto is not None:
            moto.stop()
        embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
