"""The benchmark's provider: an OpenAI-compatible stub answering instantly (bench/llm_gateway.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.llm_stub import StubProviders

app = StubProviders().app()
