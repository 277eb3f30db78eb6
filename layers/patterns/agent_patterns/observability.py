"""Powertools Logger and Metrics shared by every function (names from the core settings)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

from agent_patterns.config import get_settings

logger = Logger(service=get_settings().powertools_service_name, stage=get_settings().stage)
metrics = Metrics(namespace=get_settings().powertools_metrics_namespace)
