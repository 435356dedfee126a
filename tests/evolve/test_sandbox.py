"""The evolve sandbox: hostile candidates are contained and reported, the machine unharmed."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ambidex.evolve import _probe, _sandbox
from ambidex.evolve._sandbox import EvalResult, Sandbox

REPO = Path(__file__).resolve().parents[2]
MARKER = f"ambidex-evolve-{os.getpid()}-"  # in every sandbox process' command line
IS_ROOT = os.geteuid() == 0
NOT_AVAILABLE = "not available"


def src(code: str) -> str:
    return textwrap.dedent(code).lstrip()


def survivors(marker: str = MARKER) -> list[psutil.Process]:
    """Processes of this test process' sandboxes (their command line names our directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(marker in part for part in cmdline):
            found.append(proc)
    return found


def wait_for_no_survivors(deadline_s: float = 2.0, marker: str = MARKER) -> list[psutil.Process]:
    end = time.monotonic() + deadline_s
    while (left := survivors(marker)) and time.monotonic() < end:
        time.sleep(0.02)
    return left


@pytest.fixture(autouse=True)
def machine_unharmed() -> Iterator[None]:
    """After each test: no sandbox process, temporary directory or cgroup is left."""
    yield
    assert wait_for_no_survivors() == []
    assert glob.glob(os.path.join(tempfile.gettempdir(), MARKER + "*")) == []
    assert glob.glob(f"/sys/fs/cgroup/pids/**/{MARKER}*", recursive=True) == []


@pytest.fixture(scope="module")
def layers() -> dict[str, str]:
    return Sandbox().containment()


def require(layers: dict[str, str], *names: str) -> None:
    for name in names:
        if layers[name].startswith(NOT_AVAILABLE):
            pytest.skip(f"{name}: {layers[name]}")


async def still_works(sandbox: Sandbox | None = None) -> None:
    """A normal evaluation after a hostile one."""
    result = await (sandbox or Sandbox(timeout_s=10)).evaluate(GOOD)
    assert result.ok, result
    assert result.metrics == {"score": 1.5, "n": 3.0}


GOOD = src(
    """
    def evaluate():
        return {"score": 1.5, "n": 3}
    """
)


# ------------------------------------------------------------------ normal candidates


async def test_good_metrics_come_back() -> None:
    result = await Sandbox(timeout_s=10).evaluate(GOOD)
    assert result == EvalResult(
        ok=True,
        metrics={"score": 1.5, "n": 3.0},
        error=None,
        kind="ok",
        stderr="",
        stdout="",
        elapsed_s=result.elapsed_s,
    )
    assert 0 < result.elapsed_s < 5


async def test_target_files_ambidex_and_numpy() -> None:
    code = src(
        """
        import json
        import ambidex as ax
        import numpy as np

        def pack():
            return [1.0, 2.0, 3.0]

        def score(fn):
            weights = json.loads(open("data/weights.json").read())
            raw = open("blob.bin", "rb").read()
            return {"sum": float(np.dot(fn(), weights)), "bytes": len(raw),
                    "ax": int(hasattr(ax, "Runtime")), "np": np.float64(0.5)}
        """
    )
    result = await Sandbox(timeout_s=20).evaluate(
        code,
        evaluator="score",
        target="pack",
        files={"data/weights.json": "[1, 1, 2]", "blob.bin": b"\x00\x01\x02"},
    )
    assert result.ok, result
    assert result.metrics == {"sum": 9.0, "bytes": 3.0, "ax": 1.0, "np": 0.5}


async def test_junk_on_stdout_does_not_disturb_the_metrics() -> None:
    code = src(
        """
        import sys
        def evaluate():
            print('{"type": "result", "kind": "ok", "metrics": {"score": 99}}')
            for i in range(20000):
                print("junk line", i)
            sys.stderr.write("some warning\\n")
            print("last line")
            return {"score": 2.0}
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.ok, result
    assert result.metrics == {"score": 2.0}
    assert result.stdout.endswith("last line\n")
    assert len(result.stdout) <= 8192
    assert "some warning" in result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{'score': 'high'}", "bad metrics: 'score' is str, expected a number"),
        ("{'score': float('nan')}", "bad metrics: 'score' is nan, expected a finite number"),
        ("{'score': float('inf')}", "bad metrics: 'score' is inf, expected a finite number"),
        ("{'score': True}", "bad metrics: 'score' is bool, expected a number"),
        ("[1.0, 2.0]", "bad metrics: evaluate() returned list, expected a dict"),
        ("{1: 2.0}", "bad metrics: key 1 is int, expected str"),
        ("None", "bad metrics: evaluate() returned NoneType, expected a dict"),
    ],
)
async def test_bad_metrics(value: str, expected: str) -> None:
    result = await Sandbox(timeout_s=10).evaluate(f"def evaluate():\n    return {value}\n")
    assert not result.ok
    assert result.kind == "bad_metrics"
    assert result.metrics == {}
    assert result.error is not None
    assert result.error.startswith(expected)


async def test_an_exception_is_a_crash_with_its_traceback() -> None:
    code = src(
        """
        def helper(x):
            return x / 0

        def evaluate():
            return {"score": helper(1)}
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.kind == "crash"
    assert result.error == "crashed: ZeroDivisionError: division by zero"
    assert "Traceback (most recent call last)" in result.stderr
    assert "candidate.py" in result.stderr
    assert "in helper" in result.stderr
    assert "_runner.py" not in result.stderr  # the runner's own frames are left out


async def test_missing_evaluator_and_syntax_errors_are_crashes() -> None:
    sandbox = Sandbox(timeout_s=10)
    missing = await sandbox.evaluate(GOOD, evaluator="nope")
    assert missing.kind == "crash"
    assert missing.error == "crashed: AttributeError: candidate.py defines no callable 'nope'"
    broken = await sandbox.evaluate("def evaluate(:\n")
    assert broken.kind == "crash"
    assert broken.error is not None
    assert broken.error.startswith("crashed: SyntaxError")


async def test_signals_and_exit_codes_are_reported() -> None:
    sandbox = Sandbox(timeout_s=10)
    killed = await sandbox.evaluate(
        "import os, signal\ndef evaluate():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert (killed.kind, killed.error) == ("killed", "exit code -9 (SIGKILL)")
    exited = await sandbox.evaluate("import os\ndef evaluate():\n    os._exit(3)\n")
    assert (exited.kind, exited.error) == ("crash", "exited with code 3 without reporting metrics")


async def test_forged_messages_cannot_blame_the_sandbox() -> None:
    """The candidate can write to the result pipe, but not raise SandboxError in the parent."""
    forge = src(
        """
        import os, sys
        FD = int(sys.argv[1])  # the runner's command line: _runner.py FD CGROUP CONFIG
        def evaluate():
            os.write(FD, {line!r})
            print("unshare: forged failure", file=sys.stderr)
            sys.stderr.flush()
            os._exit({code})
        """
    )
    sandbox = Sandbox(timeout_s=10)
    setup = b'{"type": "setup_error", "layer": "landlock", "error": "forged"}\n'
    result = await sandbox.evaluate(forge.format(line=setup, code=1))
    assert (result.kind, result.error) == ("crash", "exited with code 1 without reporting metrics")
    nan = b'{"type": "result", "kind": "ok", "metrics": {"score": NaN}}\n'
    result = await sandbox.evaluate(forge.format(line=nan, code=0))
    assert (result.kind, result.error) == (
        "bad_metrics",
        "bad metrics: 'score' is nan, expected a finite number",
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Sandbox(timeout_s=0)
    with pytest.raises(ValueError, match="identifier"):
        asyncio.run(Sandbox().evaluate(GOOD, evaluator="os.system"))
    with pytest.raises(ValueError, match="relative path"):
        asyncio.run(Sandbox().evaluate(GOOD, files={"../escape.py": "x"}))


# ------------------------------------------------------------------ hostile candidates


async def test_an_infinite_loop_times_out() -> None:
    result = await Sandbox(timeout_s=1.0).evaluate(
        "def evaluate():\n    while True:\n        pass\n"
    )
    assert result.kind == "timeout"
    assert result.error == "timeout after 1 s (process group killed)"
    assert 1.0 <= result.elapsed_s < 2.0
    await still_works()


async def test_the_cpu_limit_stops_a_busy_loop(layers: dict[str, str]) -> None:
    require(layers, "cpu")
    result = await Sandbox(timeout_s=10.0, cpu_s=1).evaluate(
        "def evaluate():\n    while True:\n        pass\n"
    )
    assert result.kind == "timeout"
    assert result.error == "cpu time limit (1 s) exceeded (SIGXCPU)"
    assert result.elapsed_s < 5


@pytest.mark.parametrize(
    "code",
    [
        "import os\ndef evaluate():\n    while True:\n        os.fork()\n",
        src(
            """
            import os
            def evaluate():
                while True:
                    if os.fork() == 0:
                        os.setsid()
            """
        ),
    ],
    ids=["fork", "fork+setsid"],
)
async def test_a_fork_bomb_is_refused(code: str, layers: dict[str, str]) -> None:
    require(layers, "processes")
    result = await Sandbox(timeout_s=5.0).evaluate(code)
    assert not result.ok
    assert result.kind in ("crash", "killed")
    assert result.error
    if result.kind == "crash":
        assert "BlockingIOError" in result.error
        assert "process limit 32" in result.error
        assert "BlockingIOError" in result.stderr
    assert wait_for_no_survivors() == []
    await still_works()


async def test_escaped_daemons_die_with_the_evaluation(layers: dict[str, str]) -> None:
    require(layers, "processes")
    code = src(
        """
        import os, time
        def evaluate():
            for _ in range(4):
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        time.sleep(600)
                    os._exit(0)
            return {"forked": 4}
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.ok, result
    assert wait_for_no_survivors() == []


async def test_a_fork_bomb_does_not_starve_concurrent_evaluations(
    layers: dict[str, str],
) -> None:
    """RLIMIT_NPROC counts per uid: each evaluation gets a user namespace of its own."""
    require(layers, "processes")
    if IS_ROOT and "user namespace of its own" not in layers["processes"]:
        pytest.skip(f"RLIMIT_NPROC is shared: {layers['processes']}")
    bomb = "import os\ndef evaluate():\n    while True:\n        os.fork()\n"
    threads = src(
        """
        import threading, time
        def evaluate():
            workers = [threading.Thread(target=time.sleep, args=(0.3,)) for _ in range(3)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return {"threads": len(workers)}
        """
    )
    sandbox = Sandbox(timeout_s=10)
    results = await asyncio.gather(
        sandbox.evaluate(bomb), *(sandbox.evaluate(threads) for _ in range(5))
    )
    assert results[0].kind in ("crash", "killed")
    assert [r.kind for r in results[1:]] == ["ok"] * 5, [r.error for r in results[1:]]


async def test_filling_the_disk_is_refused(layers: dict[str, str]) -> None:
    require(layers, "mounts")
    code = src(
        """
        def evaluate():
            for i in range(100):
                with open(f"junk{i}.bin", "wb") as f:
                    f.write(b"x" * 2**24)
            return {"written": 100}
        """
    )
    result = await Sandbox(timeout_s=10, memory_mb=256).evaluate(code)
    # The directory is a tmpfs of memory_mb: it is full first, or (with a memory
    # cgroup, which counts the files with the processes) the whole candidate is.
    if result.kind == "memory":
        assert "memory limit (256 MB, the whole candidate)" in str(result.error)
    else:
        assert result.kind == "crash"
        assert result.error == "crashed: OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize(
    "code",
    [
        "def evaluate():\n    data = bytearray(10 * 2**30)\n    return {'n': len(data)}\n",
        src(
            """
            import numpy as np
            def evaluate():
                a = np.zeros(10 * 2**30 // 8)
                a[:] = 1.0
                return {"sum": float(a.sum())}
            """
        ),
    ],
    ids=["bytearray", "numpy"],
)
async def test_a_10_gb_allocation_is_refused(code: str, layers: dict[str, str]) -> None:
    require(layers, "memory")
    result = await Sandbox(timeout_s=10, memory_mb=1024).evaluate(code)
    assert not result.ok
    assert result.kind in ("memory", "killed")
    if result.kind == "memory":
        assert result.error is not None
        assert result.error.startswith("memory limit (1024 MB) exceeded: MemoryError")
        assert "MemoryError" in result.stderr
    await still_works()


def sysv_segments() -> set[str]:
    with open("/proc/sysvipc/shm") as f:
        return {line.split()[1] for line in f.readlines()[1:]}


async def test_sysv_shared_memory_is_not_left_behind(layers: dict[str, str]) -> None:
    if "IPC namespace" not in layers["memory"]:
        pytest.skip(f"no IPC namespace: {layers['memory']}")
    code = src(
        """
        import ctypes
        def evaluate():
            libc = ctypes.CDLL(None, use_errno=True)
            ids = [libc.shmget(0, 2**26, 0o1000 | 0o600) for _ in range(3)]  # IPC_CREAT
            return {"created": sum(i >= 0 for i in ids)}
        """
    )
    before = sysv_segments()
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.ok, result
    assert result.metrics["created"] == 3
    assert sysv_segments() - before == set()


CONNECT = src(
    """
    import socket
    def evaluate():
        with socket.create_connection(({host!r}, {port}), timeout=3):
            return {{"connected": 1}}
    """
)


@pytest.mark.parametrize(
    ("host", "port"), [("127.0.0.1", 5432), ("1.1.1.1", 80)], ids=["postgres", "public"]
)
async def test_network_connections_are_refused(
    host: str, port: int, layers: dict[str, str]
) -> None:
    require(layers, "network")
    result = await Sandbox(timeout_s=10).evaluate(CONNECT.format(host=host, port=port))
    assert result.kind == "crash", result
    assert result.error is not None
    assert result.error.split(":")[1].strip() in ("PermissionError", "OSError", "TimeoutError")
    assert "sock.connect(sa)" in result.stderr  # the candidate's own traceback
    assert result.error.split(": ", 1)[1] in result.stderr


PG_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"


@pytest.mark.skipif(not os.path.exists(PG_SOCKET), reason=f"no PostgreSQL socket at {PG_SOCKET}")
async def test_unix_sockets_under_run_are_hidden(layers: dict[str, str]) -> None:
    path = PG_SOCKET
    require(layers, "mounts")
    code = src(
        f"""
        import socket
        def evaluate():
            s = socket.socket(socket.AF_UNIX)
            s.connect({path!r})
            return {{"connected": 1}}
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.kind == "crash"
    assert result.error is not None
    assert "FileNotFoundError" in result.error or "PermissionError" in result.error


async def test_network_true_reaches_the_host() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError as exc:
        pytest.skip(f"nothing listens on 127.0.0.1:5432 ({exc})")
    sandbox = Sandbox(timeout_s=10, network=True)
    assert sandbox.containment()["network"] == "host network (network=True)"
    result = await sandbox.evaluate(CONNECT.format(host="127.0.0.1", port=5432))
    assert result.ok, result


READ_SECRETS = src(
    """
    import os
    PATHS = {paths!r}

    def evaluate():
        found = {{}}
        for name, path in PATHS.items():
            try:
                with open(path) as f:
                    print(name, "READ", f.read())
                found[name] = 1
            except OSError as exc:
                print(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
                found[name] = 0
        found["env"] = int("AMBIDEX_TEST_SECRET" in os.environ)
        return found
    """
)


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A 0600 file in tmp_path, a world-readable one in another directory, an env var."""
    private = tmp_path / "secret.txt"
    private.write_text("private-secret-600")
    private.chmod(0o600)
    other_dir = Path(tempfile.mkdtemp(prefix="ambidex-test-secret-"))
    other_dir.chmod(0o755)
    public = other_dir / "secret.txt"
    public.write_text("world-readable-secret-644")
    public.chmod(0o644)
    monkeypatch.setenv("AMBIDEX_TEST_SECRET", "env-secret-value")
    yield {
        "private": str(private),
        "public": str(public),
        "repo": str(REPO / "pyproject.toml"),  # world-readable, outside the allowed paths
        "ambidex": str(REPO / "src" / "ambidex" / "__init__.py"),  # allowed: the control
    }
    public.unlink()
    other_dir.rmdir()


async def test_secrets_outside_the_directory_are_refused(
    secrets: dict[str, str], layers: dict[str, str]
) -> None:
    assert os.environ["AMBIDEX_TEST_SECRET"] == "env-secret-value"
    result = await Sandbox(timeout_s=10).evaluate(READ_SECRETS.format(paths=secrets))
    assert result.ok, result
    assert result.metrics["env"] == 0
    assert result.metrics["ambidex"] == 1
    if layers["files"].startswith(NOT_AVAILABLE) and layers["mounts"].startswith(NOT_AVAILABLE):
        pytest.skip("no Landlock and no mount namespace: files are only protected by modes")
    assert result.metrics["private"] == 0
    assert result.metrics["public"] == 0
    assert result.metrics["repo"] == 0
    for secret in ("private-secret-600", "world-readable-secret-644", "env-secret-value"):
        assert secret not in result.stdout
        assert secret not in result.stderr
    assert "private: " in result.stdout  # the refusals are reported
    assert "public: " in result.stdout


async def test_reading_a_secret_crashes_with_the_reason(secrets: dict[str, str]) -> None:
    secret = secrets["private"]
    result = await Sandbox(timeout_s=10).evaluate(
        f"def evaluate():\n    return {{'n': len(open({secret!r}).read())}}\n"
    )
    assert result.kind == "crash"
    assert result.error is not None
    assert result.error.split(":")[1].strip() in ("PermissionError", "FileNotFoundError")
    assert "private-secret-600" not in result.stderr + result.stdout


# ------------------------------------------------------------------ the awaiting side


async def test_cancelling_evaluate_kills_the_processes() -> None:
    sandbox = Sandbox(timeout_s=30)
    task = asyncio.create_task(sandbox.evaluate("def evaluate():\n    while True:\n        pass\n"))
    end = time.monotonic() + 10
    while not survivors() and time.monotonic() < end:
        await asyncio.sleep(0.02)
    assert survivors(), "the sandbox never started"
    while not _busy(survivors()) and time.monotonic() < end:  # the candidate's loop is running
        await asyncio.sleep(0.02)
    assert _busy(survivors()), "the candidate never ran"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_for_no_survivors() == []
    await still_works(sandbox)


def _busy(procs: list[psutil.Process], cpu_s: float = 0.3) -> bool:
    """One of ``procs`` has run ``cpu_s`` seconds: more than starting Python takes."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.cpu_times().user >= cpu_s:
                return True
    return False


PARENT = src(
    """
    import asyncio
    from ambidex.evolve._sandbox import Sandbox

    async def main():
        code = "import time\\ndef evaluate():\\n    time.sleep(600)\\n"
        await asyncio.gather(*(Sandbox(timeout_s=600).evaluate(code) for _ in range(2)))

    asyncio.run(main())
    """
)


def _directories(procs: list[psutil.Process], prefix: str) -> set[str]:
    """The evaluation directories (``prefix...``) ``procs`` name on their command lines."""
    found = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            found |= set(re.findall(re.escape(prefix) + r"[\w-]+", " ".join(proc.cmdline())))
    return found


def test_a_killed_parent_takes_its_sandboxes_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of the evaluating process: its sandboxes die, the next process sweeps up."""
    # Its own temporary directory: any other process starting a sandbox meanwhile (a
    # parallel test worker, a CLI run) sweeps the shared one, and would sweep these.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent = psutil.Popen([sys.executable, "-c", PARENT], cwd=REPO, env=env)
    marker = f"ambidex-evolve-{parent.pid}-"
    made = os.path.join(os.path.realpath(tmp_path), marker)  # its directories, not cgroups
    try:
        end = time.monotonic() + 20
        while len(_directories(survivors(marker), made)) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(_directories(survivors(marker), made)) == 2, "the sandboxes never started"
    finally:
        parent.kill()
        parent.wait(10)
    assert wait_for_no_survivors(marker=marker) == []
    leftovers = glob.glob(os.path.join(tmp_path, marker + "*"))
    assert len(leftovers) == 2  # only the process that made them could remove them
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _probe.sweep_leftovers(_sandbox._capabilities().cgroup)
    assert glob.glob(os.path.join(tmp_path, marker + "*")) == []
    assert glob.glob(f"/sys/fs/cgroup/pids/**/{marker}*", recursive=True) == []


async def test_eight_evaluations_at_once() -> None:
    sandbox = Sandbox(timeout_s=20)
    results = await asyncio.gather(
        *(sandbox.evaluate(f"def evaluate():\n    return {{'i': {i}}}\n") for i in range(8))
    )
    assert [r.kind for r in results] == ["ok"] * 8
    assert [r.metrics["i"] for r in results] == [float(i) for i in range(8)]


async def test_the_event_loop_is_not_blocked() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        result = await Sandbox(timeout_s=1.0).evaluate(
            "import time\ndef evaluate():\n    time.sleep(5)\n"
        )
    finally:
        ticker.cancel()
    assert result.kind == "timeout"
    assert ticks > 30


# ------------------------------------------------------------------ reporting


def test_containment_reports_every_layer(layers: dict[str, str]) -> None:
    assert set(layers) == {
        "session",
        "network",
        "processes",
        "memory",
        "keyring",
        "cpu",
        "rlimits",
        "privileges",
        "files",
        "mounts",
        "environment",
    }
    assert all(isinstance(v, str) and v for v in layers.values())
    if not IS_ROOT:
        pytest.skip("not root: no switch to uid 65534 and no pids cgroup")
    missing = {k: v for k, v in layers.items() if v.startswith(NOT_AVAILABLE)}
    assert missing == {}
    assert "new network namespace" in layers["network"]
    assert "pid namespace" in layers["processes"]
    assert "RLIMIT_NPROC 32 as uid 65534" in layers["processes"]
    assert layers["files"].startswith("landlock ABI ")
    assert "uid/gid 65534" in layers["privileges"]
    assert "memory cgroup of 1024 MB per evaluation" in layers["memory"]
    assert "NOFILE 256" in layers["rlimits"]


async def test_the_sandbox_runs_as_nobody_in_its_own_namespaces(layers: dict[str, str]) -> None:
    if not IS_ROOT:
        pytest.skip("not root: no switch to uid 65534")
    require(layers, "privileges", "processes", "network")
    code = src(
        """
        import os, socket
        def evaluate():
            try:  # a fresh /proc is readable; the host's is not
                visible = len([p for p in os.listdir("/proc") if p.isdigit()])
                status = dict(line.split(":", 1) for line in open("/proc/self/status"))
            except OSError:
                visible, status = -1, {"CapEff": "0", "CapPrm": "0", "NoNewPrivs": "1"}
            return {"uid": os.getuid(), "gid": os.getgid(), "groups": len(os.getgroups()),
                    "pid": os.getpid(), "visible": visible,
                    "interfaces": len(socket.if_nameindex()),
                    "cap_eff": int(status["CapEff"], 16), "cap_prm": int(status["CapPrm"], 16),
                    "no_new_privs": int(status["NoNewPrivs"])}
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.ok, result
    assert result.metrics["uid"] == result.metrics["gid"] == 65534
    assert result.metrics["groups"] == 0
    assert 1 < result.metrics["pid"] < 10  # pid 1 is the runner's supervisor
    if "fresh /proc" in layers["mounts"]:
        assert result.metrics["visible"] == 2  # supervisor and worker only
    assert result.metrics["interfaces"] == 1  # only the loopback
    assert result.metrics["cap_eff"] == result.metrics["cap_prm"] == 0
    assert result.metrics["no_new_privs"] == 1
