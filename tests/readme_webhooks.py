"""The README's webhook `verify` example, loaded as written there (tests check the docs work)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.conftest import ROOT


def readme_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    """The `verify` function the README's Webhooks section shows, as written there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(import base64[^`]*?def verify\(.*?)```", readme, re.S)
    assert found is not None, "the README's Webhooks section shows `def verify(...)`"
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)  # noqa: S102 - our own README's example
    verify: Callable[[str, dict[str, str], bytes], bool] = namespace["verify"]
    return verify
