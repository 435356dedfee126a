"""Runs one page's blocks in order in a work directory (the machinery of test_docs.py).

The conventions it follows are described at the top of test_docs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from _mdblocks import Block, Page, kind_of

__all__ = ["ROOT", "PageRun", "install_commands", "without_installs"]

ROOT = Path(__file__).resolve().parents[2]
_RUNNER = Path(__file__).with_name("_pyrunner.py")
BLOCK_TIMEOUT_S = 120.0  # a block that takes this long is broken, not slow
SERVER_START_S = 60.0
_INSTALL = re.compile(r"^\s*pip3? install\b")
_SERVED_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)")


def _install_segments(line: str) -> tuple[list[str], str]:
    """Split ``pip install x && pip install y && rest`` into the installs and ``rest``."""
    installs: list[str] = []
    rest = line
    while _INSTALL.match(rest):
        head, sep, tail = rest.partition(" && ")
        installs.append(head.split(" #")[0].strip())
        rest = tail if sep else ""
    return installs, rest


def install_commands(code: str) -> list[str]:
    """The ``pip install`` commands of a shell block (the test does not run them)."""
    return [cmd for line in code.splitlines() for cmd in _install_segments(line)[0]]


def without_installs(code: str) -> str:
    """A shell block without its ``pip install`` commands (lines, or ``&&`` heads)."""
    kept = []
    for line in code.splitlines():
        installs, rest = _install_segments(line)
        if not installs or rest.strip():
            kept.append(rest if installs else line)
    return "\n".join(kept) + "\n"


@dataclass
class _Server:
    """A long-running command of a ``server`` block and the port it said it serves on."""

    process: subprocess.Popen[str]
    documented_port: int
    port: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    follower: threading.Thread | None = None

    def stop(self) -> None:
        """End the server, then close its output once the follower has read it all."""
        _stop(self.process)
        if self.follower is not None:
            self.follower.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class PageRun:
    """The state of one page's run: its directory, environment, servers and python process."""

    page: Page
    workdir: Path
    log: IO[str]
    env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # what later blocks also see
    substitutions: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    servers: list[_Server] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    times: list[tuple[str, str, float]] = field(default_factory=list)
    _python: subprocess.Popen[str] | None = None
    _replies: IO[str] | None = None

    # -- the page ---------------------------------------------------------------------

    def run(self) -> None:
        """Write the page's files, then run every block in order."""
        self.failures.extend(self.page.problems)
        for block in self.page.blocks:
            if block.verb == "file":
                self._write_file(block)
        for block in self.page.blocks:
            started = time.perf_counter()
            kind = self._run_block(block)
            self.times.append((block.where, kind, time.perf_counter() - started))

    def _run_block(self, block: Block) -> str:
        kind = kind_of(block)
        if kind is None:
            self.failures.append(
                f"{block.where}: a block labelled {block.lang!r}: label it python, bash, "
                "console, text, yaml, json or toml (see tests/docs/test_docs.py)"
            )
            return "?"
        if block.verb in ("skip", "file"):
            return block.verb
        code = self._substituted(block.code)
        if kind == "data":
            self._check_data(block, code)
        elif kind == "python":
            self._run_python(block, code)
        elif kind == "shell" and block.verb == "server":
            self._start_server(block, without_installs(code))
        elif kind == "shell":
            self._run_shell(block, without_installs(code))
        elif kind == "console":
            self._run_console(block, code)
        return kind

    def _substituted(self, code: str) -> str:
        for pattern, replacement in self.substitutions:
            code = pattern.sub(replacement, code)
        return code

    def _fail(self, block: Block, what: str) -> None:
        self.failures.append(f"{block.where}: {what}")

    # -- files and data ---------------------------------------------------------------

    def _write_file(self, block: Block) -> None:
        target = self.workdir / block.arg
        if not block.arg or target.resolve().parent != self.workdir.resolve():
            self._fail(block, f"docs-test file needs a plain file name, got {block.arg!r}")
            return
        target.write_text(block.code, encoding="utf-8")
        if kind_of(block) == "python":
            try:
                compile(block.code, block.where, "exec")
            except SyntaxError as exc:
                self._fail(block, f"{block.arg} does not compile: {exc}")
        elif kind_of(block) == "data":
            self._check_data(block, block.code)

    def _check_data(self, block: Block, code: str) -> None:
        lang = block.lang.split()[0]
        try:
            if lang == "json":
                json.loads(code)
            elif lang == "toml":
                tomllib.loads(code)
            else:
                yaml.safe_load(code)
        except Exception as exc:
            self._fail(block, f"not valid {lang}: {exc}")

    # -- python -----------------------------------------------------------------------

    def _run_python(self, block: Block, code: str) -> None:
        python, replies = self._python_process()
        request = {
            "code": code,
            "path": str(ROOT / block.page),
            "line": block.line,
            "env": self.extra_env,
        }
        assert python.stdin is not None
        python.stdin.write(json.dumps(request) + "\n")
        python.stdin.flush()
        ready, _, _ = select.select([replies], [], [], BLOCK_TIMEOUT_S)
        answer = replies.readline() if ready else ""
        if not answer:
            self._stop_python()
            self._fail(block, f"the python block did not finish in {BLOCK_TIMEOUT_S:.0f} s")
            return
        error = json.loads(answer)["error"]
        if error:
            self._fail(block, f"the python block raised:\n{error}")

    def _python_process(self) -> tuple[subprocess.Popen[str], IO[str]]:
        if self._python is None or self._replies is None:
            read_fd, write_fd = os.pipe()
            self._python = subprocess.Popen(
                [sys.executable, "-u", str(_RUNNER), str(write_fd)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=[write_fd],
                start_new_session=True,
            )
            os.close(write_fd)
            self._replies = os.fdopen(read_fd, "r")
        return self._python, self._replies

    def _stop_python(self) -> None:
        if self._python is not None:
            _stop(self._python, closing_stdin=True)
            self._python = None
        if self._replies is not None:
            self._replies.close()
            self._replies = None

    # -- shell ------------------------------------------------------------------------

    def _shell(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code],
            cwd=self.workdir,
            env=self.env | self.extra_env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )

    def _run_shell(self, block: Block, code: str) -> None:
        if not code.strip():
            return
        try:
            done = self._shell(code)
        except subprocess.TimeoutExpired:
            self._fail(block, f"the commands did not finish in {BLOCK_TIMEOUT_S:.0f} s")
            return
        self._log(block, code, done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            self._fail(block, f"exit {done.returncode} from\n{code}\n{tail}")

    def _run_console(self, block: Block, code: str) -> None:
        for command, expected in console_steps(code):
            try:
                done = self._shell(command)
            except subprocess.TimeoutExpired:
                self._fail(block, f"{command!r} did not finish in {BLOCK_TIMEOUT_S:.0f} s")
                continue
            output = done.stdout + done.stderr
            self._log(block, command, output)
            missing = unmatched_line(expected, output)
            if missing is not None:
                self._fail(block, f"$ {command}\nprinted\n{output}\nwithout the line\n{missing}")

    def _log(self, block: Block, code: str, output: str) -> None:
        self.log.write(f"--- {block.where} ({block.lang})\n{code}\n{output}\n")
        self.log.flush()

    # -- servers ----------------------------------------------------------------------

    def _start_server(self, block: Block, code: str) -> None:
        lines = [line for line in code.splitlines() if line.strip()]
        if len(lines) != 1:
            self._fail(block, "a server block holds one command")
            return
        command = re.sub(r"\s+#.*$", "", lines[0])
        documented = re.search(r"--port[ =](\d+)", command)
        port = int(documented[1]) if documented else 8000
        if documented:
            command = command.replace(documented[0], "--port 0")
        else:
            command += " --port 0"
        for earlier in [s for s in self.servers if s.documented_port == port]:
            earlier.stop()
            self.servers.remove(earlier)
        server = self._launch(command, port)
        if not server.ready.wait(SERVER_START_S) or server.port is None:
            self._fail(block, f"{command!r} did not say where it serves (see the log)")
            return
        self.log.write(f"--- {block.where}: {command!r} serves on port {server.port}\n")
        served = f"127.0.0.1:{server.port}"
        pattern = re.compile(rf"\b(?:localhost|127\.0\.0\.1):{port}\b")
        self.substitutions = [(p, r) for p, r in self.substitutions if p.pattern != pattern.pattern]
        self.substitutions.append((pattern, served))
        if " serve" in command:
            self.extra_env["AMBIDEX_URL"] = f"http://{served}"

    def _launch(self, command: str, port: int) -> _Server:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.workdir,
            env=self.env | self.extra_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        server = _Server(process, port)
        server.follower = threading.Thread(target=self._follow, args=(server,), daemon=True)
        server.follower.start()
        self.servers.append(server)
        return server

    def _follow(self, server: _Server) -> None:
        """Copy a server's output to the log; note the port its first URL names."""
        assert server.process.stdout is not None
        for line in server.process.stdout:
            self.log.write(line)
            found = _SERVED_URL.search(line)
            if found and server.port is None:
                server.port = int(found[1])
                server.ready.set()
        server.ready.set()  # it ended: whoever waits learns at once

    def close(self) -> None:
        """Stop the python process and every server."""
        self._stop_python()
        for server in self.servers:
            server.stop()
        self.servers.clear()


def console_steps(code: str) -> Iterator[tuple[str, list[str]]]:
    """``(command, expected output lines)`` for each ``$ `` command of a console block."""
    command: list[str] = []
    expected: list[str] = []
    for line in code.splitlines():
        if command and not expected and _continues("\n".join(command)):
            command.append(line)
        elif line.startswith("$ "):
            if command:
                yield "\n".join(command), expected
            command, expected = [line.removeprefix("$ ")], []
        elif command:
            expected.append(line)
    if command:
        yield "\n".join(command), expected


def _continues(command: str) -> bool:
    """Whether a command goes on on the next line: a trailing ``\\`` or an open quote."""
    if command.endswith("\\"):
        return True
    try:
        shlex.split(command)
    except ValueError:  # "No closing quotation"
        return True
    return False


def unmatched_line(expected: list[str], output: str) -> str | None:
    """The first expected line not printed (in order); ``...`` in a line matches anything."""
    lines = [line.rstrip() for line in output.splitlines()]
    at = 0
    for want in (line.rstrip() for line in expected):
        if not want:
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")))
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None


def _stop(process: subprocess.Popen[Any], *, closing_stdin: bool = False) -> None:
    """End a process the test started, and its process group, politely first."""
    if closing_stdin and process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # what the leader left behind in its group
