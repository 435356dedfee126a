"""Reward hacking: a candidate's score is earned, never forged (issue 13, "Tests must show").

Every candidate here tries to raise its own score without solving the task: by forging
the result message, patching what the evaluator uses, reaching into the evaluator's
process, lying about its answer or breaking the protocol between the two processes.
The task has a known ground truth: ``f()`` returns three numbers in [0, 1] and scores
``3 * min(xs) - |sum(xs) - 1|``, which is at most 1.0 (``[1/3, 1/3, 1/3]``). Each attack
must end as a failure that names the real reason, or as an honest score of what the
candidate really returned; never above the honest maximum, and nothing left running
(the ``machine_unharmed`` fixture of test_sandbox.py checks after every test).

Tests whose comment says "Found by attack" are attacks that worked when this suite was
first written; each comment says what the attack did and what closed it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path

import pytest
from test_sandbox import MARKER, layers, machine_unharmed, require, src, wait_for_no_survivors

import ambidex as ax
from ambidex.evolve import Proposal, ProposalContext, _probe, _sandbox
from ambidex.evolve._sandbox import EvalResult, Sandbox

__all__ = ["MARKER", "layers", "machine_unharmed"]  # fixtures shared with test_sandbox

HONEST_MAX = 1.0

EVALUATOR = src(
    """
    import math
    import os

    def f():
        return [0.2, 0.3, 0.5]

    def evaluate(f):
        xs = f()
        if type(xs) is not list or len(xs) != 3:
            raise ValueError("f() must return a list of 3 numbers")
        for x in xs:
            if type(x) not in (int, float) or not math.isfinite(x) or not 0 <= x <= 1:
                raise ValueError("f() must return finite numbers in [0, 1]")
        import statistics  # imported lazily, after the candidate ran

        planted = [name for name in os.listdir() if name.startswith("PLANTED-")]
        return {
            "score": 3 * min(xs) - abs(math.fsum(xs) - 1),
            "spread": statistics.pstdev(xs),
            "planted": len(planted),
        }
    """
)

# The same task judged naively (len, sum, abs, float on whatever came back): only safe
# because nothing but plain data crosses from the candidate.
NAIVE_EVALUATOR = src(
    """
    def f():
        return [0.2, 0.3, 0.5]

    def evaluate(f):
        xs = f()
        if len(xs) != 3:
            raise ValueError("f() must return 3 numbers")
        if abs(sum(xs) - 1) > 1e-9:
            raise ValueError("f() must return numbers summing to 1")
        if min(xs) < 0:
            raise ValueError("f() must return numbers >= 0")
        return {"score": 3 * float(min(xs))}
    """
)

# What a candidate needs to speak the call protocol by hand (see _runner.py: a frame is
# the header's length and the buffer count, 8 bytes each, the JSON header, then each
# buffer after its 8-byte length).
RAW = src(
    """
    import fcntl, json, os, sys, time

    def reply_fd():
        # the write end of the reply pipe: the only pipe that leaves this process
        for fd in range(3, 256):
            try:
                if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                    return fd
            except OSError:
                pass
        raise RuntimeError("no reply pipe")

    def put(data):
        fd = reply_fd()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def frame(head, buffers=()):
        if not isinstance(head, bytes):
            head = json.dumps(head).encode()
        parts = [len(head).to_bytes(8, "big"), len(buffers).to_bytes(8, "big"), head]
        for buffer in buffers:
            parts += [len(buffer).to_bytes(8, "big"), buffer]
        return b"".join(parts)
    """
)

FORGED = b'{"type": "result", "kind": "ok", "metrics": {"score": 1e9, "spread": 0, "planted": 0}}\n'


def honest(xs: list[float]) -> dict[str, float]:
    """What EVALUATOR gives for ``xs``."""
    mean = sum(xs) / 3
    return {
        "score": 3 * min(xs) - abs(math.fsum(xs) - 1),
        "spread": math.sqrt(sum((x - mean) ** 2 for x in xs) / 3),
        "planted": 0.0,
    }


async def judge(
    code: str,
    evaluator: str = EVALUATOR,
    *,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    maximum: float = HONEST_MAX,
) -> EvalResult:
    """Evaluate ``code`` as a candidate for ``f`` with the trusted ``evaluator``."""
    result = await Sandbox(timeout_s=timeout_s, memory_mb=memory_mb).evaluate(
        code, evaluator="evaluate", target="f", evaluator_source=evaluator
    )
    assert_earned(result, maximum)
    return result


def assert_earned(result: EvalResult, maximum: float = HONEST_MAX) -> None:
    """Never above the honest maximum; a failure says why in one line."""
    if result.ok:
        assert result.error is None
        assert result.metrics["score"] <= maximum, result
    else:
        assert result.metrics == {}
        assert result.error, result
        assert "\n" not in result.error
        assert result.kind in ("crash", "rejected", "memory", "timeout", "killed", "bad_metrics")


def assert_honest_score(result: EvalResult, xs: list[float]) -> None:
    assert result.ok, result
    assert result.metrics == pytest.approx(honest(xs)), result


# ------------------------------------------------------------------ the ground truth


async def test_the_honest_maximum_and_the_starting_point() -> None:
    best = await judge("def f():\n    return [1 / 3, 1 / 3, 1 / 3]\n")
    assert best.metrics == {"score": HONEST_MAX, "spread": 0.0, "planted": 0.0}
    start = await judge(EVALUATOR)
    assert_honest_score(start, [0.2, 0.3, 0.5])
    cheap = await judge("def f():\n    return [0.0, 0.0, 1.0]\n")
    assert_honest_score(cheap, [0.0, 0.0, 1.0])
    assert cheap.metrics["score"] == 0.0


# ------------------------------------------------------------------ forged results


FORGE_EVERYWHERE = src(
    """
    import glob, os
    LINE = FORGED_LINE

    def f():
        skip = {reply_fd()} if SPARE_THE_REPLY_PIPE else set()
        for fd in range(1024):
            if fd not in skip:
                try:
                    os.write(fd, LINE)
                except OSError:
                    pass
        for path in glob.glob("/proc/self/fd/*") + glob.glob("/proc/thread-self/fd/*"):
            if int(path.rsplit("/", 1)[1]) not in skip:
                try:
                    with open(path, "wb") as out:
                        out.write(LINE)
                except OSError:
                    pass
        return [0.0, 0.0, 1.0]
    """
)


async def test_forged_results_on_every_descriptor_reach_nothing() -> None:
    """0..1023 and /proc/self/fd: stdout, stderr and its own pipes, never the result pipe."""
    code = RAW + FORGE_EVERYWHERE.replace("FORGED_LINE", repr(FORGED))
    result = await judge(code.replace("SPARE_THE_REPLY_PIPE", "True"))
    assert_honest_score(result, [0.0, 0.0, 1.0])
    assert FORGED.decode() in result.stdout  # it did write: to its own stdout
    # Also on the reply pipe: the evaluator reads it as a call's answer, which it is not.
    result = await judge(code.replace("SPARE_THE_REPLY_PIPE", "False"))
    assert result.kind == "crash"
    assert result.error is not None
    assert result.error.startswith("crashed: its answer is not data: a message of ")


OTHER_PROCESSES = src(
    """
    import ctypes, glob, json, os, signal

    def f():
        me, evaluator = os.getpid(), os.getppid()
        report = {"wrote": [], "refused": 0, "listed": [], "signals": {}, "ptrace": {}}
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
        for pid in sorted(set(others) | {str(evaluator), "1"}):
            try:
                report["listed"].append((pid, os.listdir(f"/proc/{pid}/fd")))
            except OSError:
                pass
            for path in glob.glob(f"/proc/{pid}/fd/*") + [f"/proc/{pid}/fd/{n}" for n in range(64)]:
                try:
                    with open(path, "wb") as out:
                        out.write(LINE)
                    report["wrote"].append(path)
                except OSError:
                    report["refused"] += 1
            for name in ("mem", "environ", "maps"):
                try:
                    with open(f"/proc/{pid}/{name}", "r+b"):
                        report["wrote"].append(f"/proc/{pid}/{name}")
                except OSError:
                    report["refused"] += 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        for pid in (evaluator, 1):
            for request, name in ((16, "attach"), (0x4206, "seize")):
                rc = libc.ptrace(request, pid, None, None)
                report["ptrace"][f"{name} {pid}"] = ctypes.get_errno() if rc else 0
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as exc:
                report["ptrace"][f"pidfd_open {pid}"] = exc.errno
                continue
            for fd in range(16):  # pidfd_getfd(2): a copy of another process' descriptor
                if libc.syscall(438, pidfd, fd, 0) >= 0:
                    report["wrote"].append(f"pidfd_getfd {pid} {fd}")
            os.close(pidfd)
        targets = [(evaluator, signal.SIGSTOP), (evaluator, signal.SIGKILL), (1, signal.SIGKILL)]
        for pid, sig in targets:
            try:
                os.kill(pid, sig)
                report["signals"][f"{sig.name} {pid}"] = 0
            except OSError as exc:
                report["signals"][f"{sig.name} {pid}"] = exc.errno
        print("REPORT " + json.dumps(report), flush=True)
        return [0.0, 0.0, 1.0]
    """
)


async def test_the_evaluators_and_pid_1s_descriptors_memory_and_signals_are_out_of_reach(
    layers: dict[str, str],
) -> None:
    """/proc/<pid>/fd|mem, pidfd_getfd, ptrace and signals to the evaluator and pid 1."""
    require(layers, "files", "privileges")  # Landlock scopes ptrace and signals
    code = OTHER_PROCESSES.replace("LINE", repr(FORGED))
    result = await judge(code)
    assert_honest_score(result, [0.0, 0.0, 1.0])
    report = json.loads(result.stdout.split("REPORT ", 1)[1].splitlines()[0])
    assert report["wrote"] == []
    assert report["listed"] == []
    assert report["refused"] > 0
    assert set(report["ptrace"].values()) <= {1, 3, 13}  # EPERM, ESRCH, EACCES
    if "landlock ABI" in layers["files"] and int(layers["files"].split()[2].rstrip(":")) >= 6:
        assert set(report["signals"].values()) == {1}  # EPERM: signals are scoped


# ------------------------------------------------------------------ patching the evaluator


STEALTHY_PATCHES = src(
    """
    import builtins, gc, json, math, statistics, sys

    def f():
        builtins.abs = lambda x: 0.0
        math.fsum = lambda xs: 1.0
        math.isfinite = lambda x: True
        statistics.pstdev = lambda xs: 0.0
        evaluator = sys.modules.get("evaluator")  # this process' copy of the evaluator
        if evaluator is not None:
            evaluator.evaluate = lambda f: {"score": 1e9}
            evaluator.math = math
        main = sys.modules["__main__"]  # the runner
        main.check_metrics = lambda *a, **k: ({"score": 1e9}, "")
        main.send = lambda fd, message: None
        frame = sys._getframe()
        while frame is not None:  # up to the evaluator's frames (copies, in this process)
            if isinstance(frame.f_locals.get("config"), dict):
                frame.f_locals["config"]["max_metrics"] = 10**9
            if hasattr(frame.f_locals.get("module"), "evaluate"):
                frame.f_locals["module"].evaluate = lambda f: {"score": 1e9}
            frame = frame.f_back
        for obj in gc.get_objects():
            if type(obj).__name__ == "Candidate":
                obj.raised = None
            if isinstance(obj, dict) and obj.get("score") == 0.0:
                obj["score"] = 1e9
        return [0.0, 0.0, 1.0]
    """
)


async def test_patched_builtins_stdlib_runner_and_frames_stay_in_the_candidates_process() -> None:
    result = await judge(STEALTHY_PATCHES)
    assert_honest_score(result, [0.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ("import builtins\nbuiltins.isinstance = lambda *a: True", "crash"),
        ("import builtins\nbuiltins.type = lambda *a: float", "crash"),
        ("import builtins\nbuiltins.float = type('F', (float,), {})", "crash"),
        (
            "import json\njson.dumps = lambda *a, **k: " + repr(FORGED.decode().strip()),
            "crashed: sent a reply that is not an answer",
        ),
        (
            "import sys\nm = sys.modules['__main__']\nw = m.write_frame\n"
            "m.write_frame = lambda fd, h, b: w(fd, {'ok': {'l': [1e9, 1e9, 1e9]}}, [])",
            "rejected: ValueError: f() must return finite numbers in [0, 1]",
        ),
        (
            "import sys\nsys.modules['__main__'].encode = lambda v, b, d=0: {'l': [9.0] * 3}",
            "rejected: ValueError: f() must return finite numbers in [0, 1]",
        ),
        ("import os\nos._exit = lambda code: None", [0.0, 0.0, 1.0]),
        (
            "import sys\nsys.modules['__main__'].check_metrics = lambda *a: ({'score': 9}, '')",
            [0.0, 0.0, 1.0],
        ),
    ],
    ids=[
        "isinstance",
        "type",
        "float",
        "json.dumps",
        "write_frame",
        "encode",
        "os._exit",
        "check_metrics",
    ],
)
async def test_breaking_its_own_runner_hurts_only_the_candidate(
    patch: str, expected: str | list[float]
) -> None:
    body = "\n".join("    " + line for line in patch.splitlines())
    result = await judge(f"def f():\n{body}\n    return [0.0, 0.0, 1.0]\n")
    if isinstance(expected, list):
        assert_honest_score(result, expected)
    elif expected == "crash":
        assert result.kind == "crash"
        assert result.error is not None
        assert result.error.startswith("crashed: ")
    else:
        kind = {"crashed": "crash", "rejected": "rejected"}[expected.split(":")[0]]
        assert (result.kind, result.error) == (kind, expected)


IMPERSONATE = src(
    """
    import os, sys

    class Out(BaseException):
        pass

    def leave(*args, **kwargs):
        raise Out()

    def f():
        # Leave the call loop for the evaluator's code path (a copy of it lives in this
        # forked process), with the result pipe's descriptor number pointing at the only
        # pipe that leaves the process, and every check and exit patched away.
        main = sys.modules["__main__"]
        frame = sys._getframe()
        while frame is not None:
            config = frame.f_locals.get("config")
            if isinstance(config, dict) and isinstance(config.get("fd"), int):
                os.dup2(reply_fd(), config["fd"])
            frame = frame.f_back
        main.check_metrics = lambda *a, **k: ({"score": 1e9}, "")
        main.evaluate = lambda config: {"type": "result", "kind": "ok", "metrics": {"score": 1e9}}
        main._reply_failure = leave
        os._exit = leave
        raise Out()
    """
)


async def test_leaving_the_call_loop_to_impersonate_the_evaluator_is_a_crash() -> None:
    result = await judge(RAW + IMPERSONATE)
    assert result.kind == "crash"
    assert result.error is not None
    assert result.error.startswith("crashed: ")
    # today: its "result" line reaches the evaluator as a reply
    assert result.error.startswith("crashed: its answer is not data: a message of ")


PLANT = src(
    """
    import os

    EVIL = '''
    import sys
    if "candidate" not in sys.modules:  # running in the evaluator's process
        open("PLANTED-" + __name__, "w").close()
    def pstdev(xs):
        return 0.0
    def fsum(xs):
        return 1.0
    '''
    NAMES = ["statistics", "math", "json", "numpy", "sitecustomize", "usercustomize",
             "fractions", "decimal", "numbers", "random", "bisect", "traceback", "errno"]

    def f():
        for directory in {os.getcwd(), os.environ.get("HOME", "."), os.environ.get("TMPDIR", ".")}:
            for name in NAMES:
                with open(os.path.join(directory, name + ".py"), "w") as out:
                    out.write(EVIL)
        return [0.0, 0.0, 1.0]
    """
)


async def test_modules_planted_in_the_directory_are_never_imported_by_the_evaluator() -> None:
    result = await judge(PLANT)
    assert_honest_score(result, [0.0, 0.0, 1.0])  # "planted": 0, the real pstdev


# ------------------------------------------------------------------ lying answers


LIARS = src(
    """
    import os

    class Liar(float):
        def __gt__(self, other): return True
        def __lt__(self, other): return False
        def __ge__(self, other): return True
        def __le__(self, other): return False
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        def __hash__(self): return 0
        def __float__(self): return 1e9
        def __abs__(self): return Liar(0.0)
        def __sub__(self, other): return Liar(0.0)
        def __add__(self, other): return Liar(1.0)
        def __radd__(self, other): return Liar(1.0)
        def __mul__(self, other): return Liar(1e9)
        def __rmul__(self, other): return Liar(1e9)

    class LyingList(list):
        def __len__(self): return 3
        def __getitem__(self, i): return Liar(1 / 3)

    class LyingDict(dict):
        def items(self): return [("score", 1e9)]
        def __getitem__(self, key): return 1e9

    class Pickled:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    def f():
        return ANSWER
    """
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("[Liar(0.0), Liar(0.0), Liar(1.0)]", ("ok", "")),
        ("LyingList([Liar(0.0), Liar(0.0), Liar(1.0)])", ("ok", "")),
        ("(Liar(0.0), Liar(0.0), Liar(1.0))", ("ok", "")),
        ("LyingList([0.0, 0.0, 0.0, 0.0, 1.0])", ("rejected", "rejected: ValueError: f() must")),
        ("LyingDict(a=1.0, b=0.0)", ("rejected", "rejected: ValueError: f() must return 3")),
        ("[Pickled(), 0.5, 0.5]", ("crash", "crashed: TypeError: cannot send Pickled: only")),
        # NaN passes the naive checks (every comparison with NaN is False) and makes the
        # score NaN, which the runner refuses.
        ("[float('nan')] * 3", ("bad_metrics", "bad metrics: 'score' is nan, expected a")),
        ("[1e308, -1e308, 1.0]", ("rejected", "rejected: ValueError: f() must return numbers >=")),
    ],
    ids=["floats", "list", "tuple", "list-len", "dict", "reduce", "nan", "huge"],
)
async def test_lying_objects_cross_as_what_they_are(answer: str, expected: tuple[str, str]) -> None:
    """Subclasses cross as their plain values: their own methods never run in the evaluator."""
    result = await judge(LIARS.replace("ANSWER", answer), NAIVE_EVALUATOR)
    kind, error = expected
    if kind == "ok":
        assert result.ok, result
        assert result.metrics == {"score": 0.0}
    else:
        assert result.kind == kind, result
        assert result.error is not None
        assert result.error.startswith(error), result.error
    assert "pwned" not in result.stdout


# ------------------------------------------------------------------ exits and signals


@pytest.mark.parametrize(
    ("ending", "error"),
    [
        ("raise SystemExit(0)", "crashed: SystemExit: 0"),
        ("raise KeyboardInterrupt", "crashed: KeyboardInterrupt"),
        ("os._exit(0)", "crashed: the candidate exited with code 0"),
        ("os.kill(os.getpid(), 9)", "crashed: the candidate was killed by signal 9"),
        (
            "sys.stdout.flush(); os.close(reply_fd()); os._exit(0)",
            "crashed: the candidate exited with code 0",
        ),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "os._exit", "SIGKILL", "close"],
)
async def test_leaving_after_a_forgery_is_a_crash(ending: str, error: str) -> None:
    code = RAW + src(
        f"""
        def f():
            for fd in (1, 2):
                os.write(fd, {FORGED!r})
            {ending}
        """
    )
    result = await judge(code)
    assert (result.kind, result.error) == ("crash", error)


async def test_a_candidate_that_never_answers_times_out() -> None:
    code = RAW + "def f():\n    os.close(reply_fd())\n    time.sleep(600)\n"
    result = await judge(code, timeout_s=1.5)
    assert (result.kind, result.error) == ("timeout", "timeout after 1.5 s (process group killed)")


# ------------------------------------------------------------------ the call protocol


MALFORMED = {
    "huge-header": (
        "(1 << 62).to_bytes(8, 'big') + bytes(8)",
        "a message of 4611686018427387904 bytes, more than the limit of",
    ),
    "huge-buffer": (
        "frame(b'{\"ok\": {\"b\": 0}}', [b''])[:-8] + (1 << 40).to_bytes(8, 'big')",
        "a message of more than",
    ),
    "many-buffers": (
        "(2).to_bytes(8, 'big') + (10**6).to_bytes(8, 'big')",
        "1000000 buffers in one message",
    ),
    "deep-json": ("frame(b'[' * 100000)", "not JSON: maximum recursion depth exceeded"),
    "deep-json-object": ("frame(b'{\"ok\": ' * 100000)", "not JSON: maximum recursion depth"),
    "not-json": ("frame(b'not json')", "not JSON: Expecting value"),
    "not-a-dict": ("frame(b'[1, 2]')", "not a message"),
    "deep-tags": ("frame({'ok': deep(150)})", "data nested deeper than 100 levels"),
    "two-tags": ("frame({'ok': {'l': [1.0], 'x': 2}})", "unexpected dict in a message"),
    "no-buffer": ("frame({'ok': {'b': 5}})", "unknown tag 'b' in a message"),
    "object-array": ("frame({'ok': {'a': ['|O', [1], 0]}}, [bytes(8)])", "dtype '|O' is not"),
    "short-array": (
        "frame({'ok': {'a': ['<f8', [3], 0]}}, [bytes(8)])",
        "an array's size does not match its data",
    ),
    "unhashable-key": ("frame({'ok': {'d': [[{'l': []}, 1.0]]}})", "unhashable dict key: list"),
    "bad-complex": ("frame({'ok': {'c': ['1', 2]}})", "a complex number needs two numbers"),
    "truncated": (
        "(100).to_bytes(8, 'big') + bytes(8) + b'{\"ok'",
        "the pipe closed after 4 of 100 bytes",
    ),
}


@pytest.mark.parametrize(("reply", "error"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_replies_are_crashes_of_the_candidate(reply: str, error: str) -> None:
    then = "os._exit(0)" if error.startswith("the pipe closed") else "time.sleep(600)"
    code = RAW + src(
        f"""
        def deep(n):
            tree = 1.0
            for _ in range(n):
                tree = {{"l": [tree]}}
            return tree

        def f():
            put({reply})
            {then}
        """
    )
    result = await judge(code, timeout_s=5)
    assert result.kind == "crash", result
    assert result.error is not None
    assert result.error.startswith("crashed: its answer is not data: " + error), result.error
    assert result.elapsed_s < 4


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("{'ready': True}", "crashed: sent a reply that is not an answer"),
        ("{'hello': 1}", "crashed: sent a reply that is not an answer"),
        ("{'raise': {'kind': 'ok', 'error': 'fine'}}", "crashed: sent a malformed error"),
        ("{'raise': {'kind': 'crash', 'error': 5}}", "crashed: sent a malformed error"),
        ("{'raise': 'ok'}", "crashed: sent a malformed error"),
    ],
    ids=["ready-again", "no-answer", "raise-ok", "raise-number", "raise-str"],
)
async def test_replies_that_are_not_answers_are_crashes(header: str, error: str) -> None:
    code = RAW + f"def f():\n    put(frame({header}))\n    time.sleep(600)\n"
    result = await judge(code)
    assert (result.kind, result.error) == ("crash", error)


async def test_deeply_nested_answers_are_refused() -> None:
    code = "def f():\n    x = [1.0]\n    for _ in range(100_000):\n        x = [x]\n    return x\n"
    result = await judge(code)
    assert (result.kind, result.error) == (
        "crash",
        "crashed: ValueError: data nested deeper than 100 levels",
    )


async def test_answers_written_ahead_are_just_its_answers() -> None:
    """Frames written ahead of the call are read as its answers: no more than an answer."""
    code = RAW + src(
        """
        def f():
            for _ in range(3):
                put(frame({"ok": {"l": [0.0, 0.0, 1.0]}}))
            return [1 / 3, 1 / 3, 1 / 3]
        """
    )
    result = await judge(code)
    assert_honest_score(result, [0.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("memory_mb", "size_mb"),
    [(1024, 400), (256, 120)],
    ids=["400MB", "120MB-in-256MB"],
)
async def test_an_answer_of_hundreds_of_mb(memory_mb: int, size_mb: int) -> None:
    """Within the message limit (half of memory_mb): read, then rejected, or out of memory."""
    code = RAW + src(
        f"""
        def f():
            head = json.dumps({{"ok": {{"b": 0}}}}).encode()
            put(len(head).to_bytes(8, "big") + (1).to_bytes(8, "big") + head)
            put(({size_mb} << 20).to_bytes(8, "big"))
            chunk = bytes(1 << 20)
            for _ in range({size_mb}):
                put(chunk)
            time.sleep(600)
        """
    )
    result = await judge(code, memory_mb=memory_mb, timeout_s=10)
    assert not result.ok
    assert (result.kind, result.error) in (
        ("rejected", "rejected: ValueError: f() must return a list of 3 numbers"),
        ("memory", f"memory limit ({memory_mb} MB) exceeded: MemoryError"),
        (
            "memory",
            f"memory limit ({memory_mb} MB, the whole candidate) reached: "
            "the kernel killed a process of it",
        ),
    ), result
    assert result.elapsed_s < 8


async def test_an_answer_above_the_message_limit_is_refused_before_it_is_read() -> None:
    code = "def f():\n    return bytes(150 << 20)\n"
    result = await judge(code, memory_mb=256)
    assert result.kind in ("crash", "memory"), result
    if result.kind == "crash":
        assert result.error == (
            f"crashed: ValueError: the answer holds {150 << 20} bytes, "
            f"more than the limit of {128 << 20}"
        )


FORK_WRITER = RAW + src(
    """
    def f():
        if os.fork() == 0:  # keeps writing well-formed answers to the reply pipe
            while True:
                try:
                    put(frame({"ok": {"l": [0.0, 0.0, 1.0]}}))
                except OSError:
                    os._exit(0)
        return [0.0, 0.0, 1.0]
    """
)

THREADS = RAW + src(
    """
    import threading

    def garbage():
        while True:
            time.sleep(0.05)
            try:
                put(b"garbage" * 1000)
            except OSError:
                return

    def f():
        threading.Thread(target=time.sleep, args=(3600,)).start()
        threading.Thread(target=garbage, daemon=True).start()
        return [0.0, 0.0, 1.0]
    """
)


@pytest.mark.parametrize("code", [FORK_WRITER, THREADS], ids=["fork", "threads"])
async def test_what_it_leaves_running_changes_nothing_and_dies(code: str) -> None:
    result = await judge(code)
    assert_honest_score(result, [0.0, 0.0, 1.0])
    assert wait_for_no_survivors() == []


# ------------------------------------------------------------------ holes (strict xfails)


HIDDEN_EVALUATOR = src(
    """
    import random

    import numpy as np

    HIDDEN = random.random()  # drawn when the module loads, never passed to f
    RNG = random.Random()  # seeded from os.urandom
    NP_RNG = np.random.default_rng()  # likewise (and numpy.random's global state)

    def f():
        return [0.5, 0.5, 0.5, 0.5]

    def evaluate(f):
        guess = f()
        if type(guess) is not list or len(guess) != 4 or any(type(g) is not float for g in guess):
            raise ValueError("f() must return 4 floats")
        hidden = [HIDDEN, RNG.random(), float(NP_RNG.random()), float(np.random.random())]
        return {"score": -sum(abs(g - h) for g, h in zip(guess, hidden))}
    """
)

READ_THE_EVALUATOR = src(
    """
    import gc, sys
    import numpy as np

    def f():
        state = getattr(sys.modules.get("evaluator"), "__dict__", None)
        if state is None:
            found = (d for d in gc.get_objects() if type(d) is dict and "NP_RNG" in d)
            state = next(found, None)
        if state is None:  # nothing to read: an honest guess
            return [0.5, 0.5, 0.5, 0.5]
        return [state["HIDDEN"], state["RNG"].random(), float(state["NP_RNG"].random()),
                float(np.random.random())]
    """
)


# Found by attack: the candidate's process is forked from the evaluator's AFTER the evaluator's
# module was loaded (Candidate() in _runner.judge, after load_evaluator), so it holds a
# copy of the evaluator's module state: values drawn at load time, random.Random() and
# numpy Generator instances, numpy's global RandomState (random's global one is reseeded
# at fork, numpy's are not). Reading sys.modules["evaluator"] in the candidate predicts
# every hidden draw: score -0.0, the maximum, where an honest guess scores about -1.
async def test_the_evaluators_hidden_state_is_not_in_the_candidates_process() -> None:
    result = await judge(READ_THE_EVALUATOR, HIDDEN_EVALUATOR, maximum=0.0)
    assert result.ok, result
    assert result.metrics["score"] < -1e-6, "the candidate predicted every hidden value"


FILE_EVALUATOR = src(
    """
    import json

    def f():
        return [0.2, 0.3, 0.5]

    def evaluate(f):
        xs = f()
        if type(xs) is not list or len(xs) != 3 or any(type(x) is not float for x in xs):
            raise ValueError("f() must return 3 floats")
        if not all(0 <= x <= 1 for x in xs) or abs(sum(xs) - 1) > 1e-9:
            raise ValueError("f() must return numbers in [0, 1] summing to 1")
        with open("weights.json") as data:  # the user's data file, given with files=
            weights = json.load(data)
        return {"score": sum(w * x for w, x in zip(weights, xs))}
    """
)


# Found by attack: the candidate's process (nested Landlock domain, same rules) may write the whole
# evaluation directory, including the data files given with files= that the trusted
# evaluator reads after calling f(): rewriting weights.json gives a score of 1e9 where
# the honest maximum is 1.0. (It can read them too: hidden answers there are not hidden.)
async def test_the_evaluators_data_files_cannot_be_rewritten() -> None:
    code = src(
        """
        import json
        def f():
            with open("weights.json", "w") as out:
                json.dump([1e9, 1e9, 1e9], out)
            return [0.2, 0.3, 0.5]
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(
        code,
        evaluator="evaluate",
        target="f",
        evaluator_source=FILE_EVALUATOR,
        files={"weights.json": "[1.0, 1.0, 1.0]"},
    )
    if result.ok:
        assert result.metrics["score"] <= HONEST_MAX, result
    else:
        assert result.kind == "crash", result


# Found by attack (wrong kind): an array whose shape numpy cannot make (a dimension >= 2**63, more
# than 64 dimensions) escapes decode() as a ValueError from reshape, raised inside the
# evaluator's call of f(): reported as "rejected: ValueError: Maximum allowed dimension
# exceeded", blaming the evaluator, instead of "crashed: its answer is not data".
@pytest.mark.parametrize(
    ("shape", "data"),
    [("[2**70, 0]", "b''"), ("[1] * 100", "bytes(8)")],
    ids=["huge-dimension", "100-dimensions"],
)
async def test_a_malformed_array_shape_is_the_candidates_crash(shape: str, data: str) -> None:
    reply = f"frame({{'ok': {{'a': ['<f8', {shape}, 0]}}}}, [{data}])"
    code = RAW + f"def f():\n    put({reply})\n    time.sleep(600)\n"
    result = await judge(code)
    assert result.kind == "crash", result
    assert result.error is not None
    assert result.error.startswith("crashed: its answer is not data"), result.error


CPU_EVALUATOR = src(
    """
    import time

    def f(n):
        return sum(range(n))

    def evaluate(f):
        start = time.process_time()
        for n in (10**5, 10**6):
            if f(n) != n * (n - 1) // 2:
                raise ValueError("wrong sum")
        cpu = time.process_time() - start
        return {"score": -cpu, "cpu_s": cpu}
    """
)


# Found by attack (by design): the evaluator's process_time()/getrusage(RUSAGE_SELF)
# /tracemalloc no longer see the candidate, which runs in another process: a candidate
# burning a second of CPU per call is measured at ~1 ms, as cheap as the closed form.
# An evaluator scoring cost this way scores every candidate as free.
async def test_the_candidates_cpu_time_is_what_the_evaluator_measures() -> None:
    slow = "def f(n):\n    for _ in range(40):\n        total = sum(range(n))\n    return total\n"
    result = await judge(slow, CPU_EVALUATOR.replace("time.process_time()", "f.cpu_s"), maximum=0.0)
    assert result.ok, result
    assert result.metrics["cpu_s"] > 0.3, result.metrics
    # The evaluator's own clock does not see it (documented): the stand-in's cpu_s does.
    mine = await judge(slow, CPU_EVALUATOR, maximum=0.0)
    assert mine.metrics["cpu_s"] < 0.3, mine.metrics


STEAL_THE_RESULT_PIPE = src(
    """
    import os, signal, stat

    LINE = FORGED_LINE

    def f():
        # The evaluator's pipes, less the two it shares with this process and stdio: the
        # result pipe. Write a forged result there, then kill the evaluator before it
        # sends its own.
        ours = set()
        for fd in range(3, 256):
            try:
                ours.add(os.fstat(fd).st_ino)
            except OSError:
                pass
        for pid in (os.getppid(), 1):
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for name in names:
                path = f"/proc/{pid}/fd/{name}"
                try:
                    info = os.stat(path)
                    if int(name) <= 2 or not stat.S_ISFIFO(info.st_mode) or info.st_ino in ours:
                        continue
                    out = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                    os.write(out, LINE)
                except OSError:
                    continue
                os.kill(os.getppid(), signal.SIGKILL)
                os._exit(0)
        return [0.0, 0.0, 1.0]
    """
)


# Found by attack (machines that are not root and have no Landlock): there the runner is root of
# its own user namespace (unshare --user --map-root-user), no uid is dropped, and the
# candidate's process keeps every capability of that namespace. CAP_SYS_PTRACE there
# overrides the evaluator's PR_SET_DUMPABLE 0: it opens /proc/<evaluator>/fd/<result
# pipe>, writes {"kind": "ok", "metrics": {"score": 1e9}}, SIGKILLs the evaluator, and
# the coordinator takes the forged line as the one result: ok, score 1e9. Simulated
# here (as root: the runner root of a user namespace of its own, no drop, no Landlock,
# no cgroups); with Landlock (ABI >= 1) or the uid drop (root) it is refused. A fix:
# no capabilities in the candidate's process (a user namespace of its own, or capset).
async def test_without_root_or_landlock_the_result_pipe_is_out_of_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caps = _sandbox._capabilities()
    if caps.unshare is None or "pid" not in caps.namespaces:
        pytest.skip("no unshare --pid: cannot simulate a runner root of its own user namespace")
    changes = {
        "root": False,
        "namespaces": tuple(dict.fromkeys(("user", *caps.namespaces))),
        "drop": False,
        "userns": False,
        "landlock_abi": 0,
        "cgroup": None,
        "memory_cgroup": None,
        "keyring": False,
    }
    fields = {field.name for field in dataclasses.fields(caps)}
    simulated = dataclasses.replace(caps, **{k: v for k, v in changes.items() if k in fields})
    monkeypatch.setattr(_probe, "_CAPS", simulated)
    result = await judge(STEAL_THE_RESULT_PIPE.replace("FORGED_LINE", repr(FORGED)))
    assert_honest_score(result, [0.0, 0.0, 1.0])


# ------------------------------------------------------------------ one process, result pipe

# Without a target the candidate IS its own evaluator and may write to the result pipe
# (its descriptor is on the runner's command line): whatever it writes there is checked,
# and a malformed, oversized or duplicated message fails that candidate only.

ONE_PROCESS = src(
    """
    import os, sys
    FD = int(sys.argv[1])

    def put(data):
        view = memoryview(data)
        while view:
            view = view[os.write(FD, view):]

    def evaluate():
        put(LINE)
        return {"score": 1.0}
    """
)
OK_LINE = b'{"type": "result", "kind": "ok", "metrics": {"score": 1e9}}\n'


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"[" * 100_000 + b"\n", "bad metrics: a message that is not a JSON object: '[[[["),
        (
            b'{"type": "result", "kind": "ok", "metrics": ' + b'{"a": ' * 100_000 + b"\n",
            'bad metrics: a message that is not a JSON object: \'{"type": "result"',
        ),
        (b"x" * (2 << 20) + b"\n", "bad metrics: more than 1048576 bytes of messages"),
        (
            b'{"pad": "' + b"x" * (2 << 20) + b'"}\n',
            "bad metrics: more than 1048576 bytes of messages",
        ),
        (OK_LINE, "bad metrics: 2 results, expected one"),
        (OK_LINE * 50, "bad metrics: 51 results, expected one"),
        (b"hello\n", "bad metrics: a message that is not a JSON object: 'hello'"),
        (b"\x00\xff\xfe\n", "bad metrics: a message that is not a JSON object: '\\x00"),
        (
            b'{"type": "result", "kind": "ok", "metrics": {"score": ' + b"9" * 5000 + b"}}\n",
            "bad metrics: a message that is not a JSON object",
        ),
    ],
    ids=[
        "deep-list",
        "deep-object",
        "2MB-line",
        "2MB-json",
        "two-results",
        "51-results",
        "not-json",
        "binary",
        "huge-int",
    ],
)
async def test_malformed_result_messages_fail_only_their_candidate(line: bytes, error: str) -> None:
    sandbox = Sandbox(timeout_s=10)
    bad, good = await asyncio.gather(
        sandbox.evaluate(ONE_PROCESS.replace("LINE", repr(line))),
        sandbox.evaluate("def evaluate():\n    return {'score': 0.5}\n"),
    )
    assert (bad.kind, bad.ok, bad.metrics) == ("bad_metrics", False, {}), bad
    assert bad.error is not None
    assert bad.error.startswith(error), bad.error
    assert (good.kind, good.metrics) == ("ok", {"score": 0.5})


async def test_a_partial_result_line_then_exit_fails() -> None:
    code = ONE_PROCESS.replace("put(LINE)\n", f"put({OK_LINE[:-10]!r})\n    os._exit(0)\n")
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.kind == "bad_metrics"
    assert result.error is not None
    assert result.error.startswith("bad metrics: a message that is not a JSON object")


# ------------------------------------------------------------------ whole evolution runs


TARGET = src(
    '''
    """Three numbers in [0, 1]: score = 3 * min - |sum - 1|, at most 1.0 ([1/3] * 3)."""

    import math

    import ambidex as ax


    @ax.evolve.target(goal="Three numbers in [0, 1] summing to 1, the least large.", metric="score")
    def f() -> list[float]:
        return [0.2, 0.3, 0.5]


    def evaluate(f) -> dict[str, float]:
        xs = f()
        if type(xs) is not list or len(xs) != 3:
            raise ValueError("f() must return a list of 3 numbers")
        for x in xs:
            if type(x) not in (int, float) or not math.isfinite(x) or not 0 <= x <= 1:
                raise ValueError("f() must return finite numbers in [0, 1]")
        return {"score": 3 * min(xs) - abs(math.fsum(xs) - 1)}
    '''
)

HONEST = "def f() -> list[float]:\n    return [1 / 3, 1 / 3, 1 / 3]\n"


def cheat(body: str) -> str:
    """One function ``f`` (what a proposer must return) whose body is ``body``."""
    return (
        "def f() -> list[float]:\n"
        + "\n".join("    " + line if line else "" for line in src(body).splitlines())
        + "\n"
    )


# Each cheat, and what it must end as: ("ok", its honest score) or (kind, error prefix).
RUN_CHEATS: dict[str, tuple[str, str | float]] = {
    "forge-every-fd": (
        cheat(
            f"""
            import os
            for fd in range(1024):
                try:
                    os.write(fd, {FORGED!r})
                except OSError:
                    pass
            return [0.0, 0.0, 1.0]
            """
        ),
        ("crash", "crashed: its answer is not data: a message of "),
    ),
    "patch-everything": (
        cheat(
            """
            import builtins, math, sys
            builtins.abs = lambda x: 0.0
            math.fsum = lambda xs: 1.0
            math.isfinite = lambda x: True
            if "evaluator" in sys.modules:  # never: forked before the evaluator loads
                sys.modules["evaluator"].evaluate = lambda f: {"score": 1e9}
            sys.modules["__main__"].check_metrics = lambda *a, **k: ({"score": 1e9}, "")
            frame = sys._getframe()
            while frame is not None:
                if frame.f_code.co_name == "judge" and "module" in frame.f_locals:
                    frame.f_locals["module"].evaluate = lambda f: {"score": 1e9}
                frame = frame.f_back
            return [0.0, 0.0, 1.0]
            """
        ),
        ("ok", 0.0),
    ),
    "liar": (
        cheat(
            """
            class Liar(float):
                def __float__(self): return 1e9
                def __gt__(self, other): return True
                def __abs__(self): return 0.0
            return [Liar(0.0), Liar(0.0), Liar(1.0)]
            """
        ),
        ("ok", 0.0),
    ),
    "system-exit": (
        cheat(
            f"""
            import os
            os.write(1, {FORGED!r})
            raise SystemExit(0)
            """
        ),
        ("crash", "crashed: SystemExit: 0"),
    ),
    "exit-0": (
        cheat(
            f"""
            import os
            os.write(2, {FORGED!r})
            os._exit(0)
            """
        ),
        ("crash", "crashed: the candidate exited with code 0"),
    ),
    "huge-claim": (
        cheat(
            """
            import fcntl, os, time
            for fd in range(3, 64):
                try:
                    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                        os.write(fd, (1 << 62).to_bytes(8, "big") + bytes(8))
                except OSError:
                    pass
            time.sleep(600)
            """
        ),
        ("crash", "crashed: its answer is not data: a message of 4611686018427387904 bytes"),
    ),
    "deep": (
        cheat(
            """
            x = [1.0]
            for _ in range(100_000):
                x = [x]
            return x
            """
        ),
        ("crash", "crashed: ValueError: data nested deeper than 100 levels"),
    ),
    "out-of-range": (
        cheat("return [1e9, 1e9, 1e9]"),
        ("rejected", "rejected: ValueError: f() must return finite numbers in [0, 1]"),
    ),
    "honest": (HONEST, ("ok", 1.0)),
}


class Cheater:
    """A proposer that returns the cheats one after the other."""

    name = "cheater"

    def __init__(self, codes: list[str]) -> None:
        self.codes = codes
        self.calls = 0

    async def propose(self, ctx: ProposalContext) -> Proposal:
        code = self.codes[self.calls % len(self.codes)]
        self.calls += 1
        return Proposal(code=code, note=f"attempt {self.calls}")


@pytest.fixture
def target_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AMBIDEX_HOME", str(tmp_path / "home"))
    path = tmp_path / "three.py"
    path.write_text(TARGET)
    return path


async def test_cheats_never_become_best_in_an_evolution_run(target_file: Path) -> None:
    codes = [code for code, _ in RUN_CHEATS.values()]
    db_path = target_file.with_suffix(".sqlite")
    result = await ax.evolve.aevolve(
        target_file,
        iterations=len(codes),
        parallel=3,
        proposer=Cheater(codes),
        db=db_path,
        timeout_s=10,
    )
    assert result.done == len(codes)
    assert result.initial is not None
    assert result.initial.score == pytest.approx(0.6)
    assert result.best is not None
    assert (result.best.code, result.best.score) == (HONEST, HONEST_MAX)
    db = ax.evolve.ProgramDatabase(db_path, metric="score", islands=4, features={})
    try:
        stored = {p.code: p for p in db.history() if p.proposer == "cheater"}
    finally:
        db.close()
    assert len(stored) == len(codes)
    for name, (code, (kind, expected)) in RUN_CHEATS.items():
        program = stored[code]
        if kind == "ok":
            assert (program.ok, program.score) == (True, expected), (name, program)
        else:
            assert not program.ok, (name, program)
            assert program.score is None
            assert program.note.split(":")[0] == kind, (name, program.note)
            assert program.error is not None
            assert program.error.startswith(str(expected)), (name, program.error)
    assert result.failures == {"crash": 5, "rejected": 1}


# Found by attack (the coordinator died): an error message with a lone surrogate (a candidate's
# exception message, or its class name) crosses as JSON ("\\ud800") into
# EvalResult.error, then ProgramDatabase.add fails with UnicodeEncodeError ("surrogates
# not allowed") when SQLite stores it: the whole aevolve() run raises and stops.
async def test_a_lone_surrogate_in_an_error_does_not_stop_the_run(target_file: Path) -> None:
    codes = [cheat("raise ValueError('\\udcff' + chr(0xD800))"), HONEST]
    result = await ax.evolve.aevolve(
        target_file,
        iterations=2,
        parallel=1,
        proposer=Cheater(codes),
        db=target_file.with_suffix(".sqlite"),
        timeout_s=10,
    )
    assert result.done == 2
    assert result.failures == {"crash": 1}
    assert result.best is not None
    assert result.best.code == HONEST
