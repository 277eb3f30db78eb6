"""Contract import path: `agent_patterns.sse` is `agent_patterns.streaming.sse`, the same module object."""

import sys

from agent_patterns.streaming import sse as _module
from agent_patterns.streaming.sse import *  # noqa: F403

sys.modules[__name__] = _module
