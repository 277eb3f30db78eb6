"""Powertools Logger and Metrics shared by every function (service name from POWERTOOLS_SERVICE_NAME)."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "AgentPatterns")

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "agent-patterns"))
metrics = Metrics()
