"""Probing for the evolve sandbox: what this machine lets it do, found once per process.

Which containment layers exist here (namespaces through ``unshare``, Landlock, v1
pids and memory cgroups, a session keyring, rlimits, dropping to uid 65534) is first
read from the system, then confirmed by trial evaluations: a layer that fails in a
trial is dropped and :class:`Capabilities` records why. The trial itself is run by
the caller (:mod:`ambidex.evolve._sandbox`), which knows how to plan and supervise
one; this module only decides what to try next.

Also here, because the probe and the planner both need them: the paths the
candidate may read (and whether uid 65534 can reach them), the names of this
process' evaluation directories and cgroups, and the sweep that removes those left
behind by a process killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import platform
import re
import shutil
import site
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "AMBIDEX_DIR",
    "KEYCTL",
    "NOBODY",
    "UNSHARE_FLAGS",
    "Capabilities",
    "Trial",
    "blocked_ancestor",
    "capabilities",
    "existing",
    "known",
    "prefix",
    "python_paths",
    "rmtree",
    "site_dirs",
    "sweep_leftovers",
    "under",
]

AMBIDEX_DIR = Path(__file__).resolve().parent.parent
NOBODY = 65534
UNSHARE_FLAGS = {
    "user": ("--user", "--map-root-user"),
    "net": ("--net",),
    "ipc": ("--ipc",),
    "pid": ("--pid", "--fork", "--kill-child"),
    "mount": ("--mount",),
    "proc": ("--mount-proc",),
}
# keyctl(2)'s syscall number by machine (glibc has no wrapper).
KEYCTL = {"x86_64": 250, "aarch64": 219, "i686": 288, "armv7l": 311, "ppc64le": 250}


@dataclass(frozen=True)
class Capabilities:
    """What this machine lets the sandbox do (probed once per process)."""

    root: bool
    unshare: str | None
    namespaces: tuple[str, ...]  # subset of UNSHARE_FLAGS' keys
    mounts: bool  # tmpfs masks and bind mounts in the mount namespace
    drop: bool  # switch to uid/gid 65534
    userns: bool  # then into a user namespace of its own (RLIMIT_NPROC per evaluation)
    landlock_abi: int  # 0: unavailable
    cgroup: str | None  # the pids cgroup under which per-evaluation cgroups are made
    memory_cgroup: str | None  # the same for memory (else the tree's memory is polled)
    keyring: bool  # a new, empty session keyring per evaluation
    rlimits: bool
    why: Mapping[str, str]  # layer -> why it is not (fully) in force


# Runs one trial evaluation under the given capabilities: ("", "") when it worked, else
# the layer that failed ("unshare", "mounts", "landlock", ... or "unknown") and why.
Trial = Callable[[Capabilities], tuple[str, str]]

_CAPS: Capabilities | None = None
_CAPS_LOCK = threading.Lock()
_LEFTOVER = re.compile(r"ambidex-evolve-(\d+)-(\d+)-")


def known() -> Capabilities | None:
    """The capabilities if this process has probed them already (None before)."""
    return _CAPS


def capabilities(trial: Trial) -> Capabilities:
    """The probed capabilities, computed on first use (blocks for ~0.1 s once).

    The first call confirms them with ``trial``, then removes what sandboxes of
    processes killed earlier left behind.
    """
    global _CAPS
    with _CAPS_LOCK:
        if _CAPS is None:
            _CAPS = _probe(trial)
            sweep_leftovers(_CAPS.cgroup, _CAPS.memory_cgroup)
        return _CAPS


def _probe(trial: Trial) -> Capabilities:
    """Start from what the machine seems to allow; drop layers that fail in a trial run."""
    caps = _static_capabilities()
    for _ in range(12):
        layer, error = trial(caps)
        if not layer:
            return caps
        degraded = _degrade(caps, layer, error)
        if degraded is None:
            why = {**caps.why, "probe": f"trial evaluation failed: {error}"}
            return dataclasses.replace(caps, why=why)
        caps = degraded
    return caps


def _degrade(caps: Capabilities, layer: str, error: str) -> Capabilities | None:
    """``caps`` without the layer that failed (None when nothing is left to drop)."""
    why = dict(caps.why)
    if layer in ("unshare", "unknown") and caps.namespaces:
        flags = " ".join(f for n in caps.namespaces for f in UNSHARE_FLAGS[n])
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


def _static_capabilities() -> Capabilities:
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
    keyring = sys.platform == "linux" and platform.machine() in KEYCTL
    if not keyring:
        why["keyring"] = f"no keyctl syscall number known for {sys.platform} {platform.machine()}"
    if not root:
        why["privileges"] = f"not root (stays uid {os.getuid()}; cannot switch users)"
    caps = Capabilities(
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


def _check_drop(caps: Capabilities) -> Capabilities:
    """Without mounts, uid 65534 can only run Python if it can reach every path it needs."""
    if not caps.drop or caps.mounts:
        return caps
    blocked = sorted({b for p in python_paths(()) if (b := blocked_ancestor(p)) is not None})
    if not blocked:
        return caps
    why = {**caps.why, "privileges": f"uid {NOBODY} cannot traverse {', '.join(blocked)}"}
    return dataclasses.replace(caps, drop=False, why=why)


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


# ---------------------------------------------------------------- paths


def site_dirs() -> list[str]:
    """This interpreter's site-packages (the user's too when it is on sys.path)."""
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages()
    if site.ENABLE_USER_SITE and user in sys.path:
        dirs.append(user)
    return dirs


def python_paths(extra: Sequence[str | Path]) -> list[str]:
    """Real paths the candidate may read: Python, site-packages, ambidex, ``extra``."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *site_dirs(),
        str(AMBIDEX_DIR),
        *(str(p) for p in extra),
    ]
    return existing(candidates)


def existing(paths: Sequence[str]) -> list[str]:
    """The real paths of ``paths`` that exist, each once, in order."""
    seen: dict[str, None] = {}
    for path in paths:
        real = os.path.realpath(path)
        if os.path.exists(real):
            seen[real] = None
    return list(seen)


def under(path: str, parent: str) -> bool:
    """``path`` is ``parent`` or inside it (as strings: no file system access)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def blocked_ancestor(path: str) -> str | None:
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
            or (st.st_uid == NOBODY and mode & stat.S_IXUSR)
            or (st.st_gid == NOBODY and mode & stat.S_IXGRP)
        ):
            return current
    return None


# ---------------------------------------------------------------- leftovers


def _pid_namespace() -> int:
    """An id of this process' pid namespace (0 if unknown)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def prefix() -> str:
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


def sweep_leftovers(*cgroup_parents: str | None) -> None:
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
                    rmtree(entry.path)


def rmtree(path: str) -> None:
    """Remove a directory tree, even where the candidate took away permissions."""

    def retry(func: Any, target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
