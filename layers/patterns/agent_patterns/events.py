"""Contract import path: `agent_patterns.events` is `agent_patterns.runs.events`, the same module object."""

import sys

from agent_patterns.runs import events as _module
from agent_patterns.runs.events import *  # noqa: F403

sys.modules[__name__] = _module
