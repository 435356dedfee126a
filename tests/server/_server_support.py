"""Real job servers for the tests: in a thread of this process, or as a subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"ambidex job service on (http://\S+)")


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class ServerProcess:
    """``ambidex serve`` (or ``ambidex worker``) as a real subprocess."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ambidex", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=str(ROOT),
            start_new_session=True,
        )
        self.url: str | None = None

    def wait_for_url(self, timeout_s: float = 30.0) -> str:
        """The URL the server printed once it listens (for ``serve``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = _URL.search(self.output())
            if found:
                self.url = found.group(1)
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"server did not start; its output:\n{self.output()}")

    def wait_for_text(self, text: str, timeout_s: float = 30.0) -> None:
        """Wait until the process has printed ``text``."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"never printed {text!r}; output:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        """``kill -9`` the process and its whole group (its cpu workers too)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


@contextmanager
def server_process(
    *args: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start ``python -m ambidex <args>``; stop (or kill) it afterwards."""
    proc = ServerProcess(*args, env=env, log=log)
    try:
        yield proc
    finally:
        proc.stop()
