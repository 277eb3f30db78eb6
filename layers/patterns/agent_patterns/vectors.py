"""Contract import path: `agent_patterns.vectors` is `agent_patterns.search.vectors`, the same module object."""

import sys

from agent_patterns.search import vectors as _module
from agent_patterns.search.vectors import *  # noqa: F403

sys.modules[__name__] = _module
