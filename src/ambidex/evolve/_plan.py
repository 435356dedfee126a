"""Planning for the evolve sandbox: what one evaluation will use.

From the sandbox's limits (:class:`Limits`) and the machine's capabilities
(:mod:`ambidex.evolve._probe`), :func:`prepare` makes one evaluation's resources and
its command: a fresh directory holding ``candidate.py`` and the user's files, the
result and lifeline pipes, per-evaluation pids and memory cgroups, and the runner's
instructions (rlimits, Landlock rules, mounts, uid, ``sys.path``) as JSON on its
command line. The :class:`Job` it returns is what :mod:`ambidex.evolve._supervise`
runs; :meth:`Job.cleanup` removes what it made. :func:`describe` says, layer by layer,
what every evaluation's plan puts in force (``Sandbox.containment()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import platform
import py_compile
import re
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from ambidex.evolve._probe import (
    AMBIDEX_DIR,
    KEYCTL,
    NOBODY,
    UNSHARE_FLAGS,
    Capabilities,
    blocked_ancestor,
    existing,
    prefix,
    python_paths,
    rmtree,
    site_dirs,
    under,
)

__all__ = [
    "MAX_METRICS",
    "MAX_METRIC_NAME",
    "MEMORY_POLL_S",
    "Cgroup",
    "Job",
    "Limits",
    "contents",
    "describe",
    "prepare",
]

_RUNNER = Path(__file__).resolve().with_name("_runner.py")
MAX_METRICS = 1000
MAX_METRIC_NAME = 200
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
_MAX_FILES = 256
# Without a memory cgroup, how often the supervisor sums the evaluation's memory.
MEMORY_POLL_S = 0.05


class Limits(Protocol):
    """The limits every evaluation of a sandbox gets (a :class:`Sandbox` has them)."""

    timeout_s: float
    cpu_s: int
    memory_mb: int
    max_processes: int
    network: bool
    extra_read_paths: tuple[str, ...]


_COUNTER = itertools.count()


@dataclass
class Job:
    """One prepared evaluation: its directory, command, environment and cgroup."""

    directory: str
    argv: list[str]
    env: dict[str, str]
    result_fds: tuple[int, int]
    lifeline_fds: tuple[int, int]  # the sandbox reads, we hold the write end until the end
    cgroup: Cgroup | None  # pids
    hunt: bool  # no pid namespace and no cgroup: find leftovers by their environment
    memory: Cgroup | None = None  # None: the tree's memory is watched from outside

    @property
    def cgroups(self) -> list[Cgroup]:
        """The cgroups made for it (pids, memory), those the machine allows."""
        return [c for c in (self.cgroup, self.memory) if c is not None]

    def cleanup_sync(self) -> None:
        """Remove the cgroups (killing stragglers) and the directory."""
        for cgroup in self.cgroups:
            for _ in range(100):
                if cgroup.remove():
                    break
                time.sleep(0.01)
        rmtree(self.directory)

    async def cleanup(self) -> None:
        """Like :meth:`cleanup_sync`, waiting on the event loop."""
        for cgroup in self.cgroups:
            for _ in range(200):
                if cgroup.remove():
                    break
                await asyncio.sleep(0.01)
        rmtree(self.directory)


def contents(
    source: str,
    target: str | None,
    files: Mapping[str, str | bytes] | None,
    evaluator_source: str | None,
) -> tuple[list[tuple[PurePosixPath, bytes]], list[str]]:
    """The files beside ``candidate.py``, and what the evaluator imports before the fork.

    The files are the user's (each name checked) and, with a target, the evaluator's
    source; ``["ambidex"]`` is preloaded when the evaluator's file imports it.

    Raises:
        ValueError: A file name is not a relative path inside the directory.
    """
    checked = _check_files(files)
    preload: list[str] = []
    if target is not None:
        trusted = evaluator_source or source
        checked.append((PurePosixPath(_EVALUATOR_FILE), trusted.encode()))
        if _IMPORTS_AMBIDEX.search(trusted):
            preload.append("ambidex")
    return checked, preload


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


def prepare(
    limits: Limits,
    source: str,
    evaluator: str,
    target: str | None,
    contents: list[tuple[PurePosixPath, bytes]],
    caps: Capabilities,
    evaluator_path: str = "evaluator.py",
    preload: Sequence[str] = (),
) -> Job:
    """The directory (``candidate.py`` and ``contents``), pipes, cgroups and command."""
    for name in (evaluator, target):
        if name is not None and not name.isidentifier():
            raise ValueError(f"not a Python identifier: {name!r}")
    directory = os.path.realpath(tempfile.mkdtemp(prefix=prefix()))
    fds: list[int] = []
    cgroup: Cgroup | None = None
    memory: Cgroup | None = None
    try:
        owner = NOBODY if caps.drop else None
        _write_files(directory, source, contents, owner, target is not None)
        if caps.cgroup is not None:
            cgroup = Cgroup(caps.cgroup, {"pids.max": limits.max_processes})
        if caps.memory_cgroup is not None:
            memory = _memory_cgroup(caps.memory_cgroup, limits.memory_mb)
        fds += os.pipe()
        fds += os.pipe()
        config = _config(limits, caps, directory, evaluator, target, evaluator_path, preload)
    except BaseException:
        for fd in fds:
            os.close(fd)
        for made in (cgroup, memory):
            if made is not None:
                made.remove()
        rmtree(directory)
        raise
    procs = ":".join(c.procs for c in (cgroup, memory) if c is not None)
    result_fds, lifeline_fds = (fds[0], fds[1]), (fds[2], fds[3])
    argv = [sys.executable, "-s", "-P", "-B", _runner_program()]
    argv += [str(result_fds[1]), str(lifeline_fds[0]), procs, json.dumps(config)]
    if caps.unshare is not None and caps.namespaces:
        names = [n for n in caps.namespaces if not (n == "net" and limits.network)]
        flags = [f for n in names for f in UNSHARE_FLAGS[n]]
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
    return Job(directory, argv, env, result_fds, lifeline_fds, cgroup, hunt, memory)


def _config(
    limits: Limits,
    caps: Capabilities,
    directory: str,
    evaluator: str,
    target: str | None,
    evaluator_path: str = "evaluator.py",
    preload: Sequence[str] = (),
) -> dict[str, Any]:
    """The runner's instructions (JSON on its command line)."""
    fresh_proc = "proc" in caps.namespaces
    shm = caps.mounts and os.path.isdir("/dev/shm")
    read = python_paths(limits.extra_read_paths)
    system = list(_SYSTEM_READ) + (list(_NETWORK_READ) if limits.network else [])
    read += [p for p in existing(system) if p not in read]
    write = [directory] + (["/dev/shm"] if shm else [])
    ambidex_parent = str(AMBIDEX_DIR.parent)
    landlock = candidate_landlock = None
    home = directory if target is None else os.path.join(directory, _CANDIDATE_DIR)
    if caps.landlock_abi > 0:
        landlock = {
            "abi": caps.landlock_abi,
            "read": read + (["/proc"] if fresh_proc else []),
            "list": [] if any(under(ambidex_parent, p) for p in read) else [ambidex_parent],
            "write": write,
            "devices": existing(_DEVICES),
            "deny_tcp": not limits.network,
        }
        candidate_landlock = {**landlock, "write": [home, *write[1:]]}
    memory = limits.memory_mb * 2**20
    fsize = _FSIZE_MB * 2**20
    owner = NOBODY if caps.drop else None
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
        "max_message_bytes": limits.memory_mb * 2**20 // 2,
        "max_metrics": MAX_METRICS,
        "max_metric_name": MAX_METRIC_NAME,
        "memory_mb": limits.memory_mb,
        "max_processes": limits.max_processes,
        "rlimits": [
            ["AS", memory, memory],
            ["CPU", limits.cpu_s, limits.cpu_s + 1],
            ["NPROC", limits.max_processes, limits.max_processes],
            ["FSIZE", fsize, fsize],
            ["CORE", 0, 0],
            ["NOFILE", _MAX_FILES, _MAX_FILES],
        ]
        if caps.rlimits
        else [],
        "keyctl": KEYCTL[platform.machine()] if caps.keyring else None,
        "uid": owner,
        "gid": owner,
        "userns": caps.drop and caps.userns,
        "landlock": landlock,
        "mounts": (
            _mount_plan(read, directory, owner, limits.memory_mb, shm) if caps.mounts else None
        ),
    }


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


def _child_sys_path() -> list[str]:
    """The parent's sys.path entries the candidate needs: stdlib, site-packages, ambidex."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    scripts = {os.path.join(p, "bin") for p in prefixes}  # a console script's sys.path[0]
    keep = [
        entry
        for entry in sys.path
        if entry and entry not in scripts and any(under(entry, p) for p in prefixes)
    ]
    for entry in (*site_dirs(), str(AMBIDEX_DIR.parent)):
        if entry not in keep:
            keep.append(entry)
    return keep


def _mount_plan(
    read: list[str], directory: str, owner: int | None, dir_mb: int, shm: bool
) -> dict[str, Any]:
    """Masks (empty tmpfs), the readable paths below them to bind back, the private dir."""
    masks = set(existing(_MASKS))
    if owner is not None:
        masks |= {b for p in [*read, directory] if (b := blocked_ancestor(p)) is not None}
    # Never hide what must be readable as a whole, nor a mask inside another one.
    masks = {m for m in masks if not any(under(m, p) for p in read)}
    masks = {m for m in masks if not any(m != o and under(m, o) for o in masks)}
    reveal: list[str] = []
    for path in sorted(read, key=len):
        if any(under(path, m) for m in masks) and not any(under(path, r) for r in reveal):
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


class Cgroup:
    """A per-evaluation v1 cgroup (pids or memory): a limit, and a list of what to kill."""

    def __init__(self, parent: str, settings: Mapping[str, int]) -> None:
        """Make it under ``parent``, writing each of ``settings`` (file name to value)."""
        self.path = Path(parent) / f"{prefix()}{next(_COUNTER)}"
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
        """Its ``cgroup.procs`` file, which a process writes its pid to to join."""
        return str(self.path / "cgroup.procs")

    def pids(self) -> list[int]:
        """The processes in it now."""
        try:
            return [int(x) for x in Path(self.procs).read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """SIGKILL every process in it (again, while forks keep adding some)."""
        for _ in range(20):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove it (True), or kill what is still in it and say False (try again)."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            self.kill()
            return False
        return True


def _memory_cgroup(parent: str, memory_mb: int) -> Cgroup:
    """A memory cgroup holding the whole evaluation to ``memory_mb``.

    Its processes and its tmpfs together; swap too where the kernel accounts it.
    """
    limit = memory_mb * 2**20
    cgroup = Cgroup(parent, {"memory.limit_in_bytes": limit})
    with contextlib.suppress(OSError):  # only with swap accounting
        (cgroup.path / "memory.memsw.limit_in_bytes").write_text(str(limit))
    return cgroup


# ---------------------------------------------------------------- the report


def describe(limits: Limits, caps: Capabilities) -> dict[str, str]:
    """What is in force for a sandbox of ``limits`` on this machine, layer by layer.

    A layer that cannot be applied reads ``"not available: <why>"``.

    Returns:
        Keys ``session``, ``network``, ``processes``, ``memory``, ``cpu``,
        ``rlimits``, ``privileges``, ``files``, ``mounts``, ``environment`` (and
        ``probe`` when even the trial evaluation failed).
    """
    ipc = "ipc" in caps.namespaces
    report = {
        "session": (
            f"own session and process group; timeout ({limits.timeout_s:g} s) and "
            "cancellation SIGKILL the whole group"
        ),
        "network": _describe_network(limits, caps),
        "processes": _describe_processes(limits, caps),
        "memory": _describe_memory(limits, caps)
        + (" + IPC namespace (no SysV shared memory left behind)" if ipc else ""),
        "keyring": (
            "a new, empty session keyring per evaluation"
            if caps.keyring
            else _NOT + caps.why.get("keyring", "unknown")
        ),
        "cpu": (
            f"RLIMIT_CPU {limits.cpu_s} s"
            if caps.rlimits
            else _NOT + caps.why.get("rlimits", "rlimits failed")
        ),
        "rlimits": (
            f"AS {limits.memory_mb} MB, CPU {limits.cpu_s} s, NPROC {limits.max_processes}, "
            f"FSIZE {_FSIZE_MB} MB, CORE 0, NOFILE {_MAX_FILES}"
            if caps.rlimits
            else _NOT + caps.why.get("rlimits", "rlimits failed")
        ),
        "privileges": (
            f"uid/gid {NOBODY} (nobody), no supplementary groups, no capabilities, no_new_privs"
            if caps.drop
            else _NOT + caps.why.get("privileges", "unknown") + "; no_new_privs only"
        ),
        "files": _describe_files(limits, caps),
        "mounts": _describe_mounts(limits, caps),
        "environment": (
            f"clean, nothing inherited: {_ENV_NAMES}; python -s -P -B; "
            "sys.path: stdlib, site-packages, ambidex"
        ),
    }
    if "probe" in caps.why:
        report["probe"] = _NOT + caps.why["probe"]
    return report


def _describe_memory(limits: Limits, caps: Capabilities) -> str:
    if caps.memory_cgroup is not None:
        whole = (
            f"a memory cgroup of {limits.memory_mb} MB per evaluation (all its processes"
            " and its tmpfs together; the kernel kills at the limit)"
        )
    else:
        why = caps.why.get("memory_cgroup", "no memory cgroup")
        whole = (
            f"the evaluation's processes and tmpfs summed every {MEMORY_POLL_S:g} s"
            f" and killed above {limits.memory_mb} MB ({why})"
        )
    if caps.rlimits:
        return f"{whole} + RLIMIT_AS {limits.memory_mb} MB per process"
    return f"{whole}; RLIMIT_AS {_NOT}{caps.why.get('rlimits', 'rlimits failed')}"


def _describe_network(limits: Limits, caps: Capabilities) -> str:
    if limits.network:
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


def _describe_processes(limits: Limits, caps: Capabilities) -> str:
    parts = []
    if "pid" in caps.namespaces:
        parts.append("pid namespace (every descendant dies with the evaluation)")
    nproc = f"RLIMIT_NPROC {limits.max_processes}"
    if caps.rlimits and caps.drop and caps.userns:
        parts.append(f"{nproc} as uid {NOBODY} in a user namespace of its own")
    elif caps.rlimits and caps.drop:
        why = caps.why.get("userns", "no user namespace")
        parts.append(f"{nproc} as uid {NOBODY}, shared by all evaluations ({why})")
    elif caps.rlimits and not caps.root and "user" in caps.namespaces:
        parts.append(f"{nproc} in a user namespace of its own")
    elif caps.rlimits and not caps.root:
        parts.append(f"{nproc} as uid {os.getuid()}, shared with its other processes")
    if caps.cgroup is not None:
        parts.append(f"pids cgroup (pids.max {limits.max_processes})")
    elif "pid" not in caps.namespaces:
        parts.append("leftover processes hunted by their environment (best effort)")
    if parts:
        return " + ".join(parts)
    return _NOT + "; ".join(caps.why.values())


def _describe_files(limits: Limits, caps: Capabilities) -> str:
    if caps.landlock_abi <= 0:
        return _NOT + "landlock: " + caps.why.get("landlock", "unknown")
    extra = " + extra_read_paths" if limits.extra_read_paths else ""
    return (
        f"landlock ABI {caps.landlock_abi}: read python + site-packages + ambidex{extra}"
        " + system libraries, write temp dir only"
    )


def _describe_mounts(limits: Limits, caps: Capabilities) -> str:
    if not caps.mounts:
        return _NOT + caps.why.get("mounts", caps.why.get("namespaces", "no mount namespace"))
    masks = ", ".join(existing(_MASKS))
    proc = ", fresh /proc" if "proc" in caps.namespaces else ""
    return (
        f"mount namespace: empty tmpfs over {masks}; the evaluation directory a private"
        f" tmpfs of {limits.memory_mb} MB (no filling the disk); private /dev/shm{proc}"
    )
