"""The evaluator sandbox of :mod:`ambidex.evolve`: run untrusted candidate programs.

Candidate programs come from an LLM or a mutator: they may loop forever, fork-bomb,
allocate all memory, open network connections or read secrets. :class:`Sandbox`
evaluates one candidate per fresh subprocess (``_runner.py``) and contains it with
every layer the operating system allows, probed once per process:

1. its own session and process group; the wall-clock timeout and cancellation
   SIGKILL the whole group (and the pid namespace takes every descendant with it);
2. ``unshare --net --ipc --pid --fork --kill-child --mount --mount-proc`` (plus
   ``--user --map-root-user`` when not root): no network but a down loopback, no
   SysV IPC left behind, no process outliving the evaluation, a private ``/proc``,
   and a mount namespace in which ``/tmp``, ``/run``, ``/root``, ``/home``... are
   covered by empty tmpfs mounts (unix sockets such as PostgreSQL's are out of reach
   too) and the evaluation directory is a private, size-limited tmpfs;
3. rlimits: address space, CPU seconds, processes, file size, open files, no core
   files; per-evaluation pids and memory cgroups (cgroup v1, as root) capping the
   process count and the memory of all processes and the tmpfs together (without a
   memory cgroup the coordinator polls the tree's memory and kills it at the limit);
   a new, empty session keyring;
4. as root, uid/gid 65534 (nobody), so that RLIMIT_NPROC counts and root's 0600
   files are unreadable, then a user namespace of its own (RLIMIT_NPROC is counted
   per user namespace: concurrent evaluations do not share it) without capabilities;
5. Landlock: read-only access to the interpreter, site-packages and the ambidex
   package, read-write access to the evaluation directory only, no TCP, signals and
   abstract unix sockets scoped to the sandbox;
6. a clean environment (nothing inherited) and ``python -s -P -B``.

A layer the machine does not allow is skipped and :meth:`Sandbox.containment` says
why. Results come back over a dedicated pipe, never stdout. With a ``target``, the
evaluator and the candidate run in two processes and calls of the candidate cross
as data (``_runner.py``; the threat model is in ``docs/evolve.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import itertools
import json
import math
import os
import platform
import py_compile
import re
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ambidex._text import plain_text
from ambidex.exceptions import AmbidexError

__all__ = ["EvalResult", "Sandbox", "SandboxError"]

_RUNNER = Path(__file__).resolve().with_name("_runner.py")
_AMBIDEX_DIR = Path(__file__).resolve().parent.parent
_NOBODY = 65534
_TAIL_BYTES = 8192
_RESULT_BYTES = 1 << 20
_MAX_METRICS = 1000
_MAX_METRIC_NAME = 200
# The evaluator's source in the evaluation directory, until the evaluator has read it.
_EVALUATOR_FILE = ".ambidex-evaluator.py"
# With a target: the candidate's own directory (its only writable place), inside the
# evaluation directory whose other files are the evaluator's.
_CANDIDATE_DIR = ".candidate"
# Imported once, before the candidate's process is forked, when the evaluator's file
# imports it: ambidex is our own code, audited to hold nothing an evaluator computes
# (its random generators reseed in a forked child), so both processes share one import.
# Nothing of the user's (the evaluator's module, numpy's global random state) is ever
# imported before the fork.
_IMPORTS_AMBIDEX = re.compile(r"^\s*(import|from)\s+ambidex\b", re.MULTILINE)
_FSIZE_MB = 64
_SHM_MB = 64
_DRAIN_GRACE_S = 2.0
_UNSHARE_FLAGS = {
    "user": ("--user", "--map-root-user"),
    "net": ("--net",),
    "ipc": ("--ipc",),
    "pid": ("--pid", "--fork", "--kill-child"),
    "mount": ("--mount",),
    "proc": ("--mount-proc",),
}
# Directories covered by an empty tmpfs inside the mount namespace.
_MASKS = ("/tmp", "/var/tmp", "/run", "/home", "/root", "/mnt", "/media", "/srv")
_SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/sys/devices/system/cpu",
)
_NETWORK_READ = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
)
_DEVICES = ("/dev/null", "/dev/zero")
_ENV_NAMES = (
    "PATH, LANG, HOME, TMPDIR, PYTHONDONTWRITEBYTECODE, PYTHONHASHSEED, "
    "OMP/OPENBLAS/MKL_NUM_THREADS=1"
)
_NOT = "not available: "
# keyctl(2)'s syscall number by machine (glibc has no wrapper).
_KEYCTL = {"x86_64": 250, "aarch64": 219, "i686": 288, "armv7l": 311, "ppc64le": 250}
_MAX_FILES = 256
_MEMORY_POLL_S = 0.05


@dataclass
class EvalResult:
    """The outcome of one evaluation.

    Attributes:
        ok: True when the evaluator returned a valid metrics dict.
        metrics: The metrics (str to finite float); empty unless ``ok``.
        error: None when ``ok``, else one line, e.g. ``"timeout after 2 s (process group
            killed)"``, ``"crashed: ZeroDivisionError: division by zero"``, ``"exit code
            -9 (SIGKILL)"``, ``"bad metrics: 'score' is str, expected a number"``.
        kind: ``"ok"``, ``"timeout"``, ``"crash"`` (the candidate raised or exited),
            ``"rejected"`` (the evaluator raised), ``"bad_metrics"``, ``"killed"`` or
            ``"memory"``.
        stderr: The last ~8 kB of the candidate's stderr (tracebacks land here).
        stdout: The last ~8 kB of the candidate's stdout.
        elapsed_s: Wall-clock seconds from starting the subprocess to its end.
    """

    ok: bool
    metrics: dict[str, float]
    error: str | None
    kind: str
    stderr: str
    stdout: str
    elapsed_s: float


class SandboxError(AmbidexError, RuntimeError):
    """The sandbox itself failed (not the candidate): a layer could not be set up."""


# ---------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class _Capabilities:
    """What this machine lets the sandbox do (probed once per process)."""

    root: bool
    unshare: str | None
    namespaces: tuple[str, ...]  # subset of _UNSHARE_FLAGS' keys
    mounts: bool  # tmpfs masks and bind mounts in the mount namespace
    drop: bool  # switch to uid/gid 65534
    userns: bool  # then into a user namespace of its own (RLIMIT_NPROC per evaluation)
    landlock_abi: int  # 0: unavailable
    cgroup: str | None  # the pids cgroup under which per-evaluation cgroups are made
    memory_cgroup: str | None  # the same for memory (else the tree's memory is polled)
    keyring: bool  # a new, empty session keyring per evaluation
    rlimits: bool
    why: Mapping[str, str]  # layer -> why it is not (fully) in force


_CAPS: _Capabilities | None = None
_CAPS_LOCK = threading.Lock()
_COUNTER = itertools.count()
_LEFTOVER = re.compile(r"ambidex-evolve-(\d+)-(\d+)-")


_RUNNER_PROGRAM: str | None = None


def _runner_program() -> str:
    """What the sandbox runs: the runner compiled once (a .pyc is a script Python runs).

    Scripts are compiled on every start and ``-B`` writes no cache: compiling the
    runner cost ~7 ms per evaluation. The bytecode is named by a hash of the source,
    so an edited runner is never run stale; where the package directory is not
    writable, the source is run.
    """
    global _RUNNER_PROGRAM
    if _RUNNER_PROGRAM is None:
        source = _RUNNER.read_bytes()
        digest = hashlib.sha256(source).hexdigest()[:16]
        cache = _RUNNER.parent / "__pycache__"
        compiled = cache / f"_runner.{digest}.{sys.implementation.cache_tag}.pyc"
        _RUNNER_PROGRAM = str(_RUNNER)
        try:
            if not compiled.exists():
                cache.mkdir(exist_ok=True)
                partial = cache / f"{compiled.name}.{os.getpid()}.tmp"
                py_compile.compile(str(_RUNNER), cfile=str(partial), doraise=True)
                os.chmod(partial, 0o644)
                os.replace(partial, compiled)
            _RUNNER_PROGRAM = str(compiled)
        except (OSError, py_compile.PyCompileError):
            pass
    return _RUNNER_PROGRAM


def _pid_namespace() -> int:
    """An id of this process' pid namespace (0 if unknown)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _prefix() -> str:
    """Names of this process' directories and cgroups: ``ambidex-evolve-PID-PIDNS-``."""
    return f"ambidex-evolve-{os.getpid()}-{_pid_namespace()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_leftovers(*cgroup_parents: str | None) -> None:
    """Remove the directories and cgroups of sandboxes whose process died (SIGKILL).

    Only names of this pid namespace whose pid no longer exists are touched.
    """
    namespace = _pid_namespace()
    if not namespace:
        return
    for place in (tempfile.gettempdir(), *cgroup_parents):
        if place is None:
            continue
        try:
            entries = list(os.scandir(place))
        except OSError:
            continue
        for entry in entries:
            match = _LEFTOVER.match(entry.name)
            if match is None or int(match[2]) != namespace or _alive(int(match[1])):
                continue
            with contextlib.suppress(OSError):
                if place in cgroup_parents:
                    os.rmdir(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path)


def _landlock_abi() -> tuple[int, str]:
    """The kernel's Landlock ABI version, or 0 and why not."""
    if sys.platform != "linux":
        return 0, f"not Linux ({sys.platform})"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError) as exc:
        return 0, f"cannot call syscalls: {exc}"
    if abi > 0:
        return int(abi), ""
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        return 0, "kernel without Landlock (ENOSYS)"
    if err == errno.EOPNOTSUPP:
        return 0, "Landlock disabled at boot (EOPNOTSUPP)"
    return 0, f"landlock_create_ruleset: {os.strerror(err)}"


def _cgroup_parent(controller: str) -> tuple[str | None, str]:
    """The v1 ``controller`` cgroup this process is in, if per-evaluation children can be made."""
    if os.geteuid() != 0:
        return None, "not root"
    base = Path("/sys/fs/cgroup") / controller
    if not (base / "cgroup.procs").exists():
        return None, f"no cgroup v1 {controller} controller at {base}"
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError as exc:
        return None, f"cannot read /proc/self/cgroup: {exc}"
    current = next(
        (
            ln.split(":", 2)[2]
            for ln in lines
            if ln.count(":") >= 2 and controller in ln.split(":")[1].split(",")
        ),
        None,
    )
    if current is None:
        return None, f"this process is in no {controller} cgroup"
    parent = base / current.lstrip("/")
    probe = parent / f"ambidex-evolve-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return None, f"cannot create cgroups in {parent}: {exc}"
    return str(parent), ""


def _static_capabilities() -> _Capabilities:
    why: dict[str, str] = {}
    root = os.geteuid() == 0
    unshare = shutil.which("unshare") or (
        "/usr/bin/unshare" if os.path.exists("/usr/bin/unshare") else None
    )
    namespaces: tuple[str, ...] = ()
    if unshare is None:
        why["namespaces"] = "unshare (util-linux) not found"
    elif sys.platform != "linux":
        unshare, why["namespaces"] = None, "not Linux"
    else:
        namespaces = ("net", "ipc", "pid", "mount", "proc")
        if not root:
            namespaces = ("user", *namespaces)
    abi, why_landlock = _landlock_abi()
    if why_landlock:
        why["landlock"] = why_landlock
    cgroup, why_cgroup = _cgroup_parent("pids")
    if why_cgroup:
        why["cgroup"] = why_cgroup
    memory_cgroup, why_memory = _cgroup_parent("memory")
    if why_memory:
        why["memory_cgroup"] = why_memory
    keyring = sys.platform == "linux" and platform.machine() in _KEYCTL
    if not keyring:
        why["keyring"] = f"no keyctl syscall number known for {sys.platform} {platform.machine()}"
    if not root:
        why["privileges"] = f"not root (stays uid {os.getuid()}; cannot switch users)"
    caps = _Capabilities(
        root=root,
        unshare=unshare,
        namespaces=namespaces,
        mounts="mount" in namespaces,
        drop=root,
        userns=root,
        landlock_abi=abi,
        cgroup=cgroup,
        memory_cgroup=memory_cgroup,
        keyring=keyring,
        rlimits=True,
        why=why,
    )
    return _check_drop(caps)


def _check_drop(caps: _Capabilities) -> _Capabilities:
    """Without mounts, uid 65534 can only run Python if it can reach every path it needs."""
    if not caps.drop or caps.mounts:
        return caps
    blocked = sorted({b for p in _python_paths(()) if (b := _blocked_ancestor(p)) is not None})
    if not blocked:
        return caps
    why = {**caps.why, "privileges": f"uid {_NOBODY} cannot traverse {', '.join(blocked)}"}
    return dataclasses.replace(caps, drop=False, why=why)


def _capabilities() -> _Capabilities:
    """The probed capabilities, computed on first use (blocks for ~0.1 s once)."""
    global _CAPS
    with _CAPS_LOCK:
        if _CAPS is None:
            _CAPS = _probe()
            _sweep_leftovers(_CAPS.cgroup, _CAPS.memory_cgroup)
        return _CAPS


_TRIAL_SOURCE = "def evaluate():\n    return {'probe': 1.0}\n"


def _probe() -> _Capabilities:
    """Start from what the machine seems to allow; drop layers that fail in a trial run."""
    caps = _static_capabilities()
    sandbox = Sandbox(timeout_s=20.0)
    for _ in range(12):
        job = sandbox._prepare(_TRIAL_SOURCE, "evaluate", None, [], caps)
        try:
            raw = job.run_sync(timeout_s=20.0)
        finally:
            job.cleanup_sync()
        layer, error = _trial_problem(raw)
        if not layer:
            return caps
        degraded = _degrade(caps, layer, error)
        if degraded is None:
            why = {**caps.why, "probe": f"trial evaluation failed: {error}"}
            return dataclasses.replace(caps, why=why)
        caps = degraded
    return caps


def _trial_problem(raw: _Raw) -> tuple[str, str]:
    for message in raw.messages:
        if message.get("type") == "setup_error":
            return str(message.get("layer")), str(message.get("error"))
        if message.get("type") == "result" and message.get("kind") == "ok":
            return "", ""
    lines = raw.stderr.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else f"exit status {raw.returncode}"
    if any(line.startswith("unshare:") for line in lines):
        return "unshare", last
    return "unknown", last


def _degrade(caps: _Capabilities, layer: str, error: str) -> _Capabilities | None:
    """``caps`` without the layer that failed (None when nothing is left to drop)."""
    why = dict(caps.why)
    if layer in ("unshare", "unknown") and caps.namespaces:
        flags = " ".join(f for n in caps.namespaces for f in _UNSHARE_FLAGS[n])
        why.setdefault("namespaces", f"unshare {flags}: {error}")
        order = ("proc", "mount", "ipc", "pid", "net", "user")
        drop = next(n for n in order if n in caps.namespaces)
        left = tuple(n for n in caps.namespaces if n != drop)
        if left == ("user",):
            left = ()
        new = dataclasses.replace(
            caps,
            namespaces=left,
            unshare=caps.unshare if left else None,
            mounts=caps.mounts and "mount" in left,
            why=why,
        )
        return _check_drop(new)
    fields: dict[str, dict[str, Any]] = {
        "mounts": {"mounts": False},
        "cgroup": {"cgroup": None},
        "memory_cgroup": {"memory_cgroup": None},
        "keyring": {"keyring": False},
        "privileges": {"drop": False, "userns": False},
        "userns": {"userns": False},
        "landlock": {"landlock_abi": 0},
        "rlimits": {"rlimits": False},
    }
    if layer not in fields or not any(getattr(caps, k) for k in fields[layer]):
        return None
    why[layer] = error
    return _check_drop(dataclasses.replace(caps, why=why, **fields[layer]))


# ---------------------------------------------------------------- paths


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if site.ENABLE_USER_SITE and user in sys.path:
        dirs.append(user)
    return dirs


def _python_paths(extra: Sequence[str | Path]) -> list[str]:
    """Real paths the candidate may read: Python, site-packages, ambidex, ``extra``."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *_site_dirs(),
        str(_AMBIDEX_DIR),
        *(str(p) for p in extra),
    ]
    return _existing(candidates)


def _existing(paths: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for path in paths:
        real = os.path.realpath(path)
        if os.path.exists(real):
            seen[real] = None
    return list(seen)


def _child_sys_path() -> list[str]:
    """The parent's sys.path entries the candidate needs: stdlib, site-packages, ambidex."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    scripts = {os.path.join(p, "bin") for p in prefixes}  # a console script's sys.path[0]
    keep = [
        entry
        for entry in sys.path
        if entry and entry not in scripts and any(_under(entry, p) for p in prefixes)
    ]
    for entry in (*_site_dirs(), str(_AMBIDEX_DIR.parent)):
        if entry not in keep:
            keep.append(entry)
    return keep


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _blocked_ancestor(path: str) -> str | None:
    """The first directory above ``path`` that uid/gid 65534 cannot traverse."""
    current = "/"
    for part in PurePosixPath(path).parts[1:-1]:
        current = os.path.join(current, part)
        try:
            st = os.stat(current)
        except OSError:
            return None
        mode = st.st_mode
        if not (
            mode & stat.S_IXOTH
            or (st.st_uid == _NOBODY and mode & stat.S_IXUSR)
            or (st.st_gid == _NOBODY and mode & stat.S_IXGRP)
        ):
            return current
    return None


def _mount_plan(
    read: list[str], directory: str, owner: int | None, dir_mb: int, shm: bool
) -> dict[str, Any]:
    """Masks (empty tmpfs), the readable paths below them to bind back, the private dir."""
    masks = set(_existing(_MASKS))
    if owner is not None:
        masks |= {b for p in [*read, directory] if (b := _blocked_ancestor(p)) is not None}
    # Never hide what must be readable as a whole, nor a mask inside another one.
    masks = {m for m in masks if not any(_under(m, p) for p in read)}
    masks = {m for m in masks if not any(m != o and _under(m, o) for o in masks)}
    reveal: list[str] = []
    for path in sorted(read, key=len):
        if any(_under(path, m) for m in masks) and not any(_under(path, r) for r in reveal):
            reveal.append(path)
    options = f"mode=0700,size={dir_mb}m"
    if owner is not None:
        options += f",uid={owner},gid={owner}"
    return {
        "masks": sorted(masks, key=len),
        "reveal": reveal,
        "dir": directory,
        "dir_options": options,
        "owner": owner,
        "shm": f"mode=1777,size={_SHM_MB}m" if shm else "",
    }


# ---------------------------------------------------------------- one run


@dataclass
class _Raw:
    """What a finished run produced, before interpretation."""

    messages: list[dict[str, Any]]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    elapsed_s: float
    garbled: str = ""  # what was wrong with the result pipe's messages, if anything
    memory: str = ""  # how the whole evaluation went over its memory limit, if it did


class _Drain:
    """Reads a pipe on the event loop, keeping its head or its tail (bounded)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, limit: int, tail: bool) -> None:
        self._loop = loop
        self._fd = fd
        self._limit = limit
        self._tail = tail
        self.data = bytearray()
        self.overflow = False  # more than ``limit`` bytes arrived
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        if len(self.data) + len(chunk) > self._limit:
            self.overflow = True
        if self._tail:
            self.data += chunk
            if len(self.data) > self._limit:
                del self.data[: -self._limit]
        elif len(self.data) < self._limit:
            self.data += chunk[: self._limit - len(self.data)]

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


class _Cgroup:
    """A per-evaluation v1 cgroup (pids or memory): a limit, and a list of what to kill."""

    def __init__(self, parent: str, settings: Mapping[str, int]) -> None:
        """Make it under ``parent``, writing each of ``settings`` (file name to value)."""
        self.path = Path(parent) / f"{_prefix()}{next(_COUNTER)}"
        self.path.mkdir()
        try:
            for name, value in settings.items():
                (self.path / name).write_text(str(value))
        except OSError:
            self.path.rmdir()
            raise

    def oom_kills(self) -> int:
        """Processes the kernel killed at a memory cgroup's limit (0 for other cgroups)."""
        try:
            text = (self.path / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in Path(self.procs).read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        for _ in range(20):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            self.kill()
            return False
        return True


class _MemoryWatch:
    """Without a memory cgroup: the evaluation's memory, summed and killed at the limit.

    Polled on the event loop. The processes are the pids cgroup's, else the descendants
    of the sandbox's first process; their resident memory is summed (pages shared after
    a fork count once per process: on the safe side) with what the evaluation's tmpfs
    holds.
    """

    def __init__(self, pid: int, job: _Job, memory_mb: int) -> None:
        self._pid = pid
        self._job = job
        self._limit = memory_mb * 2**20
        self._memory_mb = memory_mb
        self.exceeded = ""
        self._task = asyncio.ensure_future(self._poll())

    def stop(self) -> None:
        self._task.cancel()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(_MEMORY_POLL_S)
            pids = self._job.cgroup.pids() if self._job.cgroup is not None else _tree(self._pid)
            used = sum(_resident(pid) for pid in pids) + _tmpfs_used(self._pid, self._job.directory)
            if used > self._limit:
                self.exceeded = (
                    f"memory limit ({self._memory_mb} MB, the whole candidate) exceeded: "
                    f"{used / 2**20:.0f} MB in {len(pids)} processes and its files; killed"
                )
                Sandbox._kill_pid(self._pid, self._job)
                return


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat_line = f.read()
            ppid = int(stat_line[stat_line.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _tmpfs_used(pid: int, directory: str) -> int:
    """Bytes in the evaluation's private tmpfs, seen through the sandbox's mount namespace.

    0 without one: then the directory is on the host's disk, under RLIMIT_FSIZE.
    """
    inside = f"/proc/{pid}/root{directory}"
    try:
        if os.stat(inside).st_dev == os.stat(directory).st_dev:
            return 0
        st = os.statvfs(inside)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _memory_cgroup(parent: str, memory_mb: int) -> _Cgroup:
    """A memory cgroup holding the whole evaluation to ``memory_mb``.

    Its processes and its tmpfs together; swap too where the kernel accounts it.
    """
    limit = memory_mb * 2**20
    cgroup = _Cgroup(parent, {"memory.limit_in_bytes": limit})
    with contextlib.suppress(OSError):  # only with swap accounting
        (cgroup.path / "memory.memsw.limit_in_bytes").write_text(str(limit))
    return cgroup


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _parse_messages(data: bytes, overflow: bool = False) -> tuple[list[dict[str, Any]], str]:
    """The result pipe's messages, and what was wrong with them ("" if nothing).

    Whatever arrives here is checked, never trusted: a line that is not a JSON object
    (too deep to parse included) or more than ``_RESULT_BYTES`` in all is reported, and
    the evaluation is then a failure of its candidate.
    """
    messages = []
    problem = f"more than {_RESULT_BYTES} bytes of messages" if overflow else ""
    for line in data.splitlines():
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict):
            messages.append(message)
        elif not problem:
            problem = f"a message that is not a JSON object: {_decode(line[:80])!r}"
    return messages, problem


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _hunt(directory: str) -> None:
    """SIGKILL every process whose environment has ``TMPDIR=directory`` (best effort).

    Only used without a pid namespace and a cgroup, where a candidate's ``setsid``
    children would otherwise outlive the evaluation; a process that replaced its
    environment with ``execve`` escapes this.
    """
    marker = f"\0TMPDIR={directory}\0".encode()
    for _ in range(10):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    environ = b"\0" + f.read() + b"\0"
            except OSError:
                continue
            if marker in environ:
                found = True
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)
        if not found:
            return


def _rmtree(path: str) -> None:
    def retry(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


@dataclass
class _Job:
    """One prepared evaluation: its directory, command, environment and cgroup."""

    directory: str
    argv: list[str]
    env: dict[str, str]
    result_fds: tuple[int, int]
    lifeline_fds: tuple[int, int]  # the sandbox reads, we hold the write end until the end
    cgroup: _Cgroup | None  # pids
    hunt: bool  # no pid namespace and no cgroup: find leftovers by their environment
    memory: _Cgroup | None = None  # None: the tree's memory is watched from outside

    @property
    def cgroups(self) -> list[_Cgroup]:
        return [c for c in (self.cgroup, self.memory) if c is not None]

    def run_sync(self, timeout_s: float) -> _Raw:
        """Run to completion synchronously (used by the capability probe only)."""
        read_fd, write_fd = self.result_fds
        life_r, life_w = self.lifeline_fds
        start = time.monotonic()
        timed_out = False
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd, life_r),
                start_new_session=True,
                env=self.env,
                cwd=self.directory,
            )
        finally:
            os.close(write_fd)
            os.close(life_r)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        finally:
            os.close(life_w)
        _kill_group(proc.pid)
        if self.hunt:
            _hunt(self.directory)
        chunks = []
        os.set_blocking(read_fd, False)
        with contextlib.suppress(OSError):
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        os.close(read_fd)
        messages, garbled = _parse_messages(b"".join(chunks))
        return _Raw(
            messages,
            proc.returncode,
            out[-_TAIL_BYTES:],
            err[-_TAIL_BYTES:],
            timed_out,
            time.monotonic() - start,
            garbled,
        )

    def cleanup_sync(self) -> None:
        """Remove the cgroups (killing stragglers) and the directory."""
        for cgroup in self.cgroups:
            for _ in range(100):
                if cgroup.remove():
                    break
                time.sleep(0.01)
        _rmtree(self.directory)

    async def cleanup(self) -> None:
        """Like :meth:`cleanup_sync`, waiting on the event loop."""
        for cgroup in self.cgroups:
            for _ in range(200):
                if cgroup.remove():
                    break
                await asyncio.sleep(0.01)
        _rmtree(self.directory)


# ---------------------------------------------------------------- the sandbox


class Sandbox:
    r"""Evaluates candidate programs in a contained subprocess, one per evaluation.

    Example:
        >>> sandbox = Sandbox(timeout_s=10)
        >>> result = await sandbox.evaluate("def evaluate():\\n    return {'score': 1.0}\\n")
        >>> result.kind, result.metrics
        ('ok', {'score': 1.0})

    Many evaluations may run at once (``asyncio.gather``); each has its own directory,
    process tree, namespaces and cgroup.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        cpu_s: float | None = None,
        memory_mb: int = 1024,
        max_processes: int = 32,
        network: bool = False,
        extra_read_paths: Sequence[str | Path] = (),
    ) -> None:
        """Configure the limits of every evaluation.

        Args:
            timeout_s: Wall-clock limit of one evaluation; the process group is then
                killed with SIGKILL.
            cpu_s: RLIMIT_CPU of the candidate (default: ``ceil(timeout_s) + 1``).
            memory_mb: RLIMIT_AS (address space) of each candidate process, in MB.
            max_processes: RLIMIT_NPROC of uid 65534 and the pids cgroup's ``pids.max``.
            network: Allow network access (no network namespace, no Landlock TCP rule).
            extra_read_paths: More files or directories the candidate may read.

        Raises:
            ValueError: A limit is not positive.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if cpu_s is not None and not cpu_s > 0:
            raise ValueError(f"cpu_s must be > 0, got {cpu_s!r}")
        if memory_mb < 1:
            raise ValueError(f"memory_mb must be >= 1, got {memory_mb!r}")
        if max_processes < 1:
            raise ValueError(f"max_processes must be >= 1, got {max_processes!r}")
        self.timeout_s = float(timeout_s)
        self.cpu_s = math.ceil(cpu_s) if cpu_s is not None else math.ceil(timeout_s) + 1
        self.memory_mb = int(memory_mb)
        self.max_processes = int(max_processes)
        self.network = bool(network)
        self.extra_read_paths = tuple(str(p) for p in extra_read_paths)

    def __repr__(self) -> str:
        return (
            f"Sandbox(timeout_s={self.timeout_s}, cpu_s={self.cpu_s}, memory_mb={self.memory_mb},"
            f" max_processes={self.max_processes}, network={self.network})"
        )

    # ------------------------------------------------------------ reporting

    def containment(self) -> dict[str, str]:
        """What is in force for this sandbox on this machine, layer by layer.

        The first call in a process probes the machine (a trial evaluation, ~0.1 s).
        A layer that cannot be applied reads ``"not available: <why>"``.

        Returns:
            Keys ``session``, ``network``, ``processes``, ``memory``, ``cpu``,
            ``rlimits``, ``privileges``, ``files``, ``mounts``, ``environment`` (and
            ``probe`` when even the trial evaluation failed).
        """
        caps = _capabilities()
        ipc = "ipc" in caps.namespaces
        report = {
            "session": (
                f"own session and process group; timeout ({self.timeout_s:g} s) and "
                "cancellation SIGKILL the whole group"
            ),
            "network": self._describe_network(caps),
            "processes": self._describe_processes(caps),
            "memory": self._describe_memory(caps)
            + (" + IPC namespace (no SysV shared memory left behind)" if ipc else ""),
            "keyring": (
                "a new, empty session keyring per evaluation"
                if caps.keyring
                else _NOT + caps.why.get("keyring", "unknown")
            ),
            "cpu": (
                f"RLIMIT_CPU {self.cpu_s} s"
                if caps.rlimits
                else _NOT + caps.why.get("rlimits", "rlimits failed")
            ),
            "rlimits": (
                f"AS {self.memory_mb} MB, CPU {self.cpu_s} s, NPROC {self.max_processes}, "
                f"FSIZE {_FSIZE_MB} MB, CORE 0, NOFILE {_MAX_FILES}"
                if caps.rlimits
                else _NOT + caps.why.get("rlimits", "rlimits failed")
            ),
            "privileges": (
                f"uid/gid {_NOBODY} (nobody), no supplementary groups, no capabilities,"
                " no_new_privs"
                if caps.drop
                else _NOT + caps.why.get("privileges", "unknown") + "; no_new_privs only"
            ),
            "files": self._describe_files(caps),
            "mounts": self._describe_mounts(caps),
            "environment": (
                f"clean, nothing inherited: {_ENV_NAMES}; python -s -P -B; "
                "sys.path: stdlib, site-packages, ambidex"
            ),
        }
        if "probe" in caps.why:
            report["probe"] = _NOT + caps.why["probe"]
        return report

    def _describe_memory(self, caps: _Capabilities) -> str:
        if caps.memory_cgroup is not None:
            whole = (
                f"a memory cgroup of {self.memory_mb} MB per evaluation (all its processes"
                " and its tmpfs together; the kernel kills at the limit)"
            )
        else:
            why = caps.why.get("memory_cgroup", "no memory cgroup")
            whole = (
                f"the evaluation's processes and tmpfs summed every {_MEMORY_POLL_S:g} s"
                f" and killed above {self.memory_mb} MB ({why})"
            )
        if caps.rlimits:
            return f"{whole} + RLIMIT_AS {self.memory_mb} MB per process"
        return f"{whole}; RLIMIT_AS {_NOT}{caps.why.get('rlimits', 'rlimits failed')}"

    def _describe_network(self, caps: _Capabilities) -> str:
        if self.network:
            return "host network (network=True)"
        parts = []
        if "net" in caps.namespaces:
            parts.append("new network namespace (only a down loopback)")
        if caps.landlock_abi >= 4:
            parts.append("landlock denies TCP connect/bind")
        if "mount" in caps.namespaces and caps.mounts:
            parts.append("unix sockets under /tmp and /run hidden")
        if parts:
            return " + ".join(parts)
        return _NOT + "; ".join(
            caps.why.get(k, "") for k in ("namespaces", "landlock") if k in caps.why
        )

    def _describe_processes(self, caps: _Capabilities) -> str:
        parts = []
        if "pid" in caps.namespaces:
            parts.append("pid namespace (every descendant dies with the evaluation)")
        nproc = f"RLIMIT_NPROC {self.max_processes}"
        if caps.rlimits and caps.drop and caps.userns:
            parts.append(f"{nproc} as uid {_NOBODY} in a user namespace of its own")
        elif caps.rlimits and caps.drop:
            why = caps.why.get("userns", "no user namespace")
            parts.append(f"{nproc} as uid {_NOBODY}, shared by all evaluations ({why})")
        elif caps.rlimits and not caps.root and "user" in caps.namespaces:
            parts.append(f"{nproc} in a user namespace of its own")
        elif caps.rlimits and not caps.root:
            parts.append(f"{nproc} as uid {os.getuid()}, shared with its other processes")
        if caps.cgroup is not None:
            parts.append(f"pids cgroup (pids.max {self.max_processes})")
        elif "pid" not in caps.namespaces:
            parts.append("leftover processes hunted by their environment (best effort)")
        if parts:
            return " + ".join(parts)
        return _NOT + "; ".join(caps.why.values())

    def _describe_files(self, caps: _Capabilities) -> str:
        if caps.landlock_abi <= 0:
            return _NOT + "landlock: " + caps.why.get("landlock", "unknown")
        extra = " + extra_read_paths" if self.extra_read_paths else ""
        return (
            f"landlock ABI {caps.landlock_abi}: read python + site-packages + ambidex{extra}"
            " + system libraries, write temp dir only"
        )

    def _describe_mounts(self, caps: _Capabilities) -> str:
        if not caps.mounts:
            return _NOT + caps.why.get("mounts", caps.why.get("namespaces", "no mount namespace"))
        masks = ", ".join(_existing(_MASKS))
        proc = ", fresh /proc" if "proc" in caps.namespaces else ""
        return (
            f"mount namespace: empty tmpfs over {masks}; the evaluation directory a private"
            f" tmpfs of {self.memory_mb} MB (no filling the disk); private /dev/shm{proc}"
        )

    # ------------------------------------------------------------ evaluation

    async def evaluate(
        self,
        source: str,
        *,
        evaluator: str = "evaluate",
        target: str | None = None,
        files: Mapping[str, str | bytes] | None = None,
        evaluator_source: str | None = None,
        evaluator_path: str = "evaluator.py",
    ) -> EvalResult:
        """Evaluate one candidate program in a fresh sandboxed subprocess.

        ``source`` becomes ``candidate.py`` in a fresh temporary directory (with
        ``files`` beside it). Without a ``target``, the runner imports it and calls
        ``candidate.<evaluator>()``. With one, the evaluator and the candidate run in
        two processes: the evaluator's module is ``evaluator_source`` (default:
        ``source`` itself), never imported from the directory, and it is called with a
        stand-in for ``candidate.<target>`` whose calls cross to the candidate's
        process and back as plain data (see ``docs/evolve.md``, threat model). The
        evaluator must return a dict of str to finite int/float. The directory is
        removed afterwards. Cancelling the awaiting task kills the evaluation's
        processes.

        Args:
            source: The candidate module's source code.
            evaluator: Name of the evaluation function.
            target: Name of the candidate's function passed to the evaluator, if any.
            files: Extra files (relative path to text or bytes) for the directory.
            evaluator_source: The trusted module holding the evaluator (with a
                ``target``); e.g. the target file as the user wrote it.
            evaluator_path: The name the evaluator's tracebacks show for its file.

        Returns:
            The :class:`EvalResult` (candidate failures are results, not exceptions).

        Raises:
            ValueError: ``evaluator``/``target`` is not an identifier or a file name is
                not a relative path inside the directory.
            SandboxError: The sandbox could not be set up (not the candidate's fault).
        """
        caps = _CAPS if _CAPS is not None else await asyncio.to_thread(_capabilities)
        contents = _check_files(files)
        preload: list[str] = []
        if target is not None:
            trusted = evaluator_source or source
            contents.append((PurePosixPath(_EVALUATOR_FILE), trusted.encode()))
            if _IMPORTS_AMBIDEX.search(trusted):
                preload.append("ambidex")
        job = self._prepare(source, evaluator, target, contents, caps, evaluator_path, preload)
        try:
            raw = await self._run(job)
        finally:
            await asyncio.shield(job.cleanup())
        return self._interpret(raw)

    def _prepare(
        self,
        source: str,
        evaluator: str,
        target: str | None,
        contents: list[tuple[PurePosixPath, bytes]],
        caps: _Capabilities,
        evaluator_path: str = "evaluator.py",
        preload: Sequence[str] = (),
    ) -> _Job:
        """The directory (``candidate.py`` and ``contents``), pipes, cgroups and command."""
        for name in (evaluator, target):
            if name is not None and not name.isidentifier():
                raise ValueError(f"not a Python identifier: {name!r}")
        directory = os.path.realpath(tempfile.mkdtemp(prefix=_prefix()))
        fds: list[int] = []
        cgroup: _Cgroup | None = None
        memory: _Cgroup | None = None
        try:
            owner = _NOBODY if caps.drop else None
            _write_files(directory, source, contents, owner, target is not None)
            if caps.cgroup is not None:
                cgroup = _Cgroup(caps.cgroup, {"pids.max": self.max_processes})
            if caps.memory_cgroup is not None:
                memory = _memory_cgroup(caps.memory_cgroup, self.memory_mb)
            fds += os.pipe()
            fds += os.pipe()
            config = self._config(caps, directory, evaluator, target, evaluator_path, preload)
        except BaseException:
            for fd in fds:
                os.close(fd)
            for made in (cgroup, memory):
                if made is not None:
                    made.remove()
            _rmtree(directory)
            raise
        procs = ":".join(c.procs for c in (cgroup, memory) if c is not None)
        result_fds, lifeline_fds = (fds[0], fds[1]), (fds[2], fds[3])
        argv = [sys.executable, "-s", "-P", "-B", _runner_program()]
        argv += [str(result_fds[1]), str(lifeline_fds[0]), procs, json.dumps(config)]
        if caps.unshare is not None and caps.namespaces:
            names = [n for n in caps.namespaces if not (n == "net" and self.network)]
            flags = [f for n in names for f in _UNSHARE_FLAGS[n]]
            argv = [caps.unshare, *flags, "--", *argv]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": directory,
            "TMPDIR": directory,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        hunt = "pid" not in caps.namespaces and cgroup is None
        return _Job(directory, argv, env, result_fds, lifeline_fds, cgroup, hunt, memory)

    def _config(
        self,
        caps: _Capabilities,
        directory: str,
        evaluator: str,
        target: str | None,
        evaluator_path: str = "evaluator.py",
        preload: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The runner's instructions (JSON on its command line)."""
        fresh_proc = "proc" in caps.namespaces
        shm = caps.mounts and os.path.isdir("/dev/shm")
        read = _python_paths(self.extra_read_paths)
        system = list(_SYSTEM_READ) + (list(_NETWORK_READ) if self.network else [])
        read += [p for p in _existing(system) if p not in read]
        write = [directory] + (["/dev/shm"] if shm else [])
        ambidex_parent = str(_AMBIDEX_DIR.parent)
        landlock = candidate_landlock = None
        home = directory if target is None else os.path.join(directory, _CANDIDATE_DIR)
        if caps.landlock_abi > 0:
            landlock = {
                "abi": caps.landlock_abi,
                "read": read + (["/proc"] if fresh_proc else []),
                "list": [] if any(_under(ambidex_parent, p) for p in read) else [ambidex_parent],
                "write": write,
                "devices": _existing(_DEVICES),
                "deny_tcp": not self.network,
            }
            candidate_landlock = {**landlock, "write": [home, *write[1:]]}
        memory = self.memory_mb * 2**20
        fsize = _FSIZE_MB * 2**20
        owner = _NOBODY if caps.drop else None
        return {
            "dir": directory,
            "sys_path": _child_sys_path(),
            "evaluator": evaluator,
            "target": target,
            "evaluator_file": _EVALUATOR_FILE,
            "candidate_dir": home,
            "preload": list(preload),
            "candidate_landlock": candidate_landlock,
            "evaluator_label": evaluator_path,
            "max_message_bytes": self.memory_mb * 2**20 // 2,
            "max_metrics": _MAX_METRICS,
            "max_metric_name": _MAX_METRIC_NAME,
            "memory_mb": self.memory_mb,
            "max_processes": self.max_processes,
            "rlimits": [
                ["AS", memory, memory],
                ["CPU", self.cpu_s, self.cpu_s + 1],
                ["NPROC", self.max_processes, self.max_processes],
                ["FSIZE", fsize, fsize],
                ["CORE", 0, 0],
                ["NOFILE", _MAX_FILES, _MAX_FILES],
            ]
            if caps.rlimits
            else [],
            "keyctl": _KEYCTL[platform.machine()] if caps.keyring else None,
            "uid": owner,
            "gid": owner,
            "userns": caps.drop and caps.userns,
            "landlock": landlock,
            "mounts": (
                _mount_plan(read, directory, owner, self.memory_mb, shm) if caps.mounts else None
            ),
        }

    async def _run(self, job: _Job) -> _Raw:
        """Start the runner, wait for it (or the timeout), collect its output."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = job.result_fds
        life_r, life_w = job.lifeline_fds
        pipes: list[int] = [read_fd, write_fd, life_r, life_w]
        drains: list[_Drain] = []
        proc: asyncio.subprocess.Process | None = None
        try:
            out_r, out_w = os.pipe()
            pipes += [out_r, out_w]
            err_r, err_w = os.pipe()
            pipes += [err_r, err_w]
            start = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *job.argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(write_fd, life_r),
                start_new_session=True,
                env=job.env,
                cwd=job.directory,
            )
            for fd in (write_fd, life_r, out_w, err_w):
                os.close(fd)
                pipes.remove(fd)
            for fd, limit, tail in (
                (read_fd, _RESULT_BYTES, False),
                (out_r, _TAIL_BYTES, True),
                (err_r, _TAIL_BYTES, True),
            ):
                drains.append(_Drain(loop, fd, limit, tail))
                pipes.remove(fd)
            timed_out = False
            watch = _MemoryWatch(proc.pid, job, self.memory_mb) if job.memory is None else None
            try:
                await asyncio.wait_for(proc.wait(), self.timeout_s)
            except TimeoutError:
                timed_out = True
                self._kill(proc, job)
                await proc.wait()
            finally:
                if watch is not None:
                    watch.stop()
            elapsed = time.monotonic() - start
            self._kill(proc, job)  # stragglers outside a pid namespace
            memory = watch.exceeded if watch is not None else ""
            if job.memory is not None and job.memory.oom_kills():
                memory = (
                    f"memory limit ({self.memory_mb} MB, the whole candidate) reached: "
                    "the kernel killed a process of it"
                )
            await asyncio.wait([d.eof for d in drains], timeout=_DRAIN_GRACE_S)
        except asyncio.CancelledError:
            if proc is not None:
                self._kill(proc, job)
                with contextlib.suppress(BaseException):
                    await asyncio.shield(asyncio.wait_for(proc.wait(), 5.0))
            raise
        finally:
            for drain in drains:
                drain.close()
            for fd in pipes:
                os.close(fd)
        messages, garbled = _parse_messages(bytes(drains[0].data), drains[0].overflow)
        return _Raw(
            messages,
            proc.returncode,
            bytes(drains[1].data),
            bytes(drains[2].data),
            timed_out,
            elapsed,
            garbled,
            memory,
        )

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process, job: _Job) -> None:
        """SIGKILL the evaluation's process group and every process of its cgroups."""
        Sandbox._kill_pid(proc.pid, job)

    @staticmethod
    def _kill_pid(pid: int, job: _Job) -> None:
        _kill_group(pid)
        for cgroup in job.cgroups:
            cgroup.kill()
        if job.hunt:
            _hunt(job.directory)

    def _interpret(self, raw: _Raw) -> EvalResult:
        """Turn what the run produced into an :class:`EvalResult`."""
        if raw.memory:
            return _result(raw, "memory", raw.memory)
        if raw.timed_out:
            return _result(
                raw, "timeout", f"timeout after {self.timeout_s:g} s (process group killed)"
            )
        by_type: dict[str, dict[str, Any]] = {}
        results = 0
        for message in raw.messages:
            by_type.setdefault(str(message.get("type")), message)
            if message.get("type") == "exit":
                by_type["exit"] = message  # the supervisor's word is the last one
            results += message.get("type") == "result"
        # After "start" the candidate ran and may have written anything (or printed
        # "unshare: ..."): only failures from before it are the sandbox's own.
        if "start" not in by_type:
            if "setup_error" in by_type:
                m = by_type["setup_error"]
                raise SandboxError(f"sandbox setup failed ({m.get('layer')}): {m.get('error')}")
            stderr = _decode(raw.stderr)
            if raw.returncode and "unshare:" in stderr:
                raise SandboxError(f"sandbox setup failed (unshare): {stderr.strip()[-300:]}")
        if raw.garbled:
            return _result(raw, "bad_metrics", f"bad metrics: {raw.garbled}")
        if results > 1:
            return _result(raw, "bad_metrics", f"bad metrics: {results} results, expected one")
        if "result" in by_type:
            return _from_message(raw, by_type["result"])
        status = by_type.get("exit", {}).get("status", raw.returncode)
        return self._from_status(raw, status if isinstance(status, int) else raw.returncode)

    def _from_status(self, raw: _Raw, status: int | None) -> EvalResult:
        if status is None:
            return _result(raw, "killed", "the sandbox ended without an exit status")
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            if -status == signal.SIGXCPU:
                return _result(
                    raw, "timeout", f"cpu time limit ({self.cpu_s} s) exceeded (SIGXCPU)"
                )
            return _result(raw, "killed", f"exit code {status} ({name})")
        return _result(raw, "crash", f"exited with code {status} without reporting metrics")


def _result(
    raw: _Raw, kind: str, error: str | None, metrics: dict[str, float] | None = None
) -> EvalResult:
    return EvalResult(
        ok=kind == "ok",
        metrics=metrics or {},
        error=None if error is None else plain_text(error),  # the candidate chose its text
        kind=kind,
        stderr=_decode(raw.stderr),
        stdout=_decode(raw.stdout),
        elapsed_s=raw.elapsed_s,
    )


def _from_message(raw: _Raw, message: dict[str, Any]) -> EvalResult:
    kind = message.get("kind")
    if kind == "ok":
        metrics, problem = _valid_metrics(message.get("metrics"))
        if metrics is None:
            return _result(raw, "bad_metrics", problem)
        return _result(raw, "ok", None, metrics)
    if kind not in ("crash", "bad_metrics", "memory", "rejected", "timeout"):
        kind = "crash"
    return _result(raw, str(kind), " ".join(str(message.get("error") or kind).split())[:500])


def _valid_metrics(value: Any) -> tuple[dict[str, float] | None, str]:
    """Re-check the worker's metrics: the candidate could have forged the message."""
    if not isinstance(value, dict):
        return None, f"bad metrics: got {type(value).__name__}, expected a dict"
    if len(value) > _MAX_METRICS:
        return None, f"bad metrics: {len(value)} metrics, more than {_MAX_METRICS}"
    metrics: dict[str, float] = {}
    for key, number in value.items():
        if plain_text(key) != key:
            return None, f"bad metrics: the name {plain_text(key)!r} is not plain text"
        if not 0 < len(key) <= _MAX_METRIC_NAME:
            return None, f"bad metrics: a name of {len(key)} characters (1 to {_MAX_METRIC_NAME})"
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return None, f"bad metrics: {key!r} is {type(number).__name__}, expected a number"
        try:
            as_float = float(number)
        except OverflowError:
            return None, f"bad metrics: {key!r} is too large"
        if not math.isfinite(as_float):
            return None, f"bad metrics: {key!r} is {as_float}, expected a finite number"
        metrics[str(key)] = as_float
    return metrics, ""


def _check_files(files: Mapping[str, str | bytes] | None) -> list[tuple[PurePosixPath, bytes]]:
    """The user's extra files as (relative path, bytes), each name checked."""
    taken = {"candidate.py", _EVALUATOR_FILE}
    out = []
    for name, content in (files or {}).items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or not rel.parts or ".." in rel.parts or str(rel) in taken:
            raise ValueError(f"files: {name!r} must be a relative path inside the directory")
        if rel.parts[0] == _CANDIDATE_DIR:
            raise ValueError(f"files: {name!r} is inside {_CANDIDATE_DIR}/, the candidate's own")
        data = content.encode() if isinstance(content, str) else bytes(content)
        out.append((rel, data))
    return out


def _write_files(
    directory: str,
    source: str,
    files: list[tuple[PurePosixPath, bytes]],
    owner: int | None,
    split: bool,
) -> None:
    root = Path(directory)
    home = root / _CANDIDATE_DIR if split else root
    home.mkdir(exist_ok=True)
    (home / "candidate.py").write_text(source, encoding="utf-8")
    for rel, data in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if owner is not None:
        os.chown(directory, owner, owner)
        for base, dirs, names in os.walk(directory):
            for name in dirs + names:
                os.chown(os.path.join(base, name), owner, owner)
