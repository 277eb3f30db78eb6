"""House rules that keep the tree honest: the README's settings tables come from the models,
and only `agent_patterns.config` reads the environment."""

from __future__ import annotations

import re

from tests.conftest import ROOT

LAYER = ROOT / "layers" / "patterns" / "agent_patterns"


def test_the_readme_settings_tables_are_generated_from_the_models() -> None:
    from agent_patterns_dev.settings_doc import markdown, readme_block

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_block(readme) == markdown(), "run: uv run python -m agent_patterns_dev.settings_doc --write"


def test_every_variable_the_readme_names_is_one_the_code_reads() -> None:
    from agent_patterns_dev.settings_doc import variables

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`", readme))  # SOME_VARIABLE
    known = set(variables()) | {
        "POWERTOOLS_LOG_LEVEL",  # read by Powertools itself
        "AWS_LWA_INVOKE_MODE",  # read by the Lambda Web Adapter
        "RESPONSE_STREAM",
    }
    assert sorted(named - known) == []


def test_only_config_reads_the_environment_in_the_layer_and_the_handlers() -> None:
    offenders = []
    for path in [*LAYER.rglob("*.py"), *(ROOT / "functions").rglob("*.py")]:
        if path == LAYER / "config.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bos\.(environ|getenv|putenv)\b", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
