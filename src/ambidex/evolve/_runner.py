"""Runs one candidate program inside the evolve sandbox.

This file is executed as a script (``python -s -P -B _runner.py FD LIFELINE CGROUP
CONFIG``) by
:mod:`ambidex.evolve._sandbox`, usually as the first process (pid 1) of fresh
pid, mount and network namespaces. It must not import ambidex: it only uses the
standard library, so that starting it costs a few milliseconds.

What it does, in order:

1. closes every inherited file descriptor but stdin/stdout/stderr, the result pipe
   (``FD``) and the lifeline (``LIFELINE``, a pipe whose other end only the parent
   holds: EOF means the parent died), and starts joining the per-evaluation pids
   cgroup (``CGROUP``, its ``cgroup.procs`` file, or an empty string) in a thread;
2. as root in its own mount namespace: covers directories the candidate has no
   business seeing (``/tmp``, ``/run``, ``/root``...) with empty tmpfs mounts and
   bind-mounts back what it needs (the interpreter, the evaluation directory);
3. when it is pid 1 of a pid namespace it stays as a tiny supervisor (an init that
   reaps orphans) and forks the worker, reporting the worker's exit status over the
   result pipe; otherwise it is the worker itself;
4. the worker sets the resource limits, drops to uid/gid 65534 (and into a user
   namespace of its own, so that RLIMIT_NPROC is not shared with other evaluations),
   sets no_new_privs and applies a Landlock ruleset; then, without a target, imports
   ``candidate`` and calls its evaluator; with one, loads the evaluator from the
   trusted file and forks the candidate's process (see ``judge`` and ``Candidate``);
5. the worker sends one JSON line over the result pipe (never stdout, which belongs to
   the candidate) and leaves with ``os._exit`` so that the candidate's threads and
   atexit hooks cannot keep it alive.

Messages (one JSON object per line): ``{"type": "start"}`` just before the candidate is
imported, then ``{"type": "result", "kind": "ok", "metrics": {...}}``,
``{"type": "result", "kind": "crash" | "rejected" | "bad_metrics" | "memory" |
"timeout", "error": "..."}``,
``{"type": "setup_error", "layer": "...", "error": "..."}`` and, from the supervisor,
``{"type": "exit", "status": N}`` (an exit code, or minus the signal number).
"""

from __future__ import annotations

# Only builtin modules at the top: starting fast matters (typing, json and traceback
# cost ~30 ms together), and the cgroup join (slow in cgroup v1) runs in a thread
# while the rest is imported.
import _thread
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Any

# prctl(2), unshare(2), capset(2).
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4
_CLONE_NEWUSER = 0x10000000
_CAPABILITY_VERSION_3 = 0x20080522
_KEYCTL_JOIN_SESSION_KEYRING = 1

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same everywhere.
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_RULE_PATH_BENEATH = 1
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ_RIGHTS = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

# mount(2) flags.
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384

_ERROR_CHARS = 300


class SetupError(Exception):
    """A containment layer could not be applied (reported as ``setup_error``)."""

    def __init__(self, layer: str, error: str) -> None:
        super().__init__(f"{layer}: {error}")
        self.layer = layer
        self.error = error


_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
    return _libc


def _oserror(what: str) -> OSError:
    import ctypes

    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def send(fd: int, message: dict[str, Any]) -> None:
    """Write one JSON line to the result pipe (best effort: the reader may be gone)."""
    import json

    data = (json.dumps(message, allow_nan=False) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


# ---------------------------------------------------------------- mounts and cgroups


class CgroupJoin:
    """Moves this process (and so every later child) into cgroups, in threads.

    Migrating a task in cgroup v1 waits for an RCU grace period (~10 ms): one thread
    per cgroup does it while the main thread imports and parses; :meth:`wait` joins
    them.
    """

    def __init__(self, procs_files: str) -> None:
        """``procs_files``: the ``cgroup.procs`` files to join, ``:``-separated."""
        self.errors: list[str] = []
        self._done: list[Any] = []
        for procs_file in procs_files.split(":") if procs_files else []:
            done = _thread.allocate_lock()
            done.acquire()
            self._done.append(done)
            _thread.start_new_thread(self._join, (procs_file, done))

    def _join(self, procs_file: str, done: Any) -> None:
        try:
            with open(procs_file, "w") as f:
                f.write("0")
        except OSError as exc:
            self.errors.append(f"cannot join {procs_file}: {exc}")
        finally:
            done.release()

    def wait(self) -> None:
        """Block until the joins are done; raise SetupError if one failed."""
        for done in self._done:
            with done:
                pass
        if self.errors:
            raise SetupError("cgroup", "; ".join(self.errors))


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _c().mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        raise _oserror(f"mount {source} on {target}")


def _make_mountpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _copy_tree(src_fd: int, dst: str, owner: int | None) -> None:
    """Copy the regular files and directories below ``src_fd`` into ``dst``."""
    for entry in os.scandir(src_fd):
        target = os.path.join(dst, entry.name)
        if entry.is_dir(follow_symlinks=False):
            os.mkdir(target, 0o700)
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                _copy_tree(sub, target, owner)
            finally:
                os.close(sub)
        elif entry.is_file(follow_symlinks=False):
            fin = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                fout = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    while chunk := os.read(fin, 1 << 20):
                        while chunk:
                            chunk = chunk[os.write(fout, chunk) :]
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
        else:
            continue
        if owner is not None:
            os.chown(target, owner, owner)


def apply_mounts(plan: dict[str, Any]) -> None:
    """Hide ``plan["masks"]`` under empty tmpfs mounts, bind back what is needed.

    ``reveal``: paths below the masks the candidate must read (the interpreter under
    ``/root``...), opened (``O_PATH``) before the masks hide them and bind-mounted back
    from ``/proc/self/fd/N``; masks are root-owned, mode 0755 and then read-only, so
    these paths become traversable for uid 65534 even when the directory they cover is
    not. ``dir``: the evaluation directory becomes a private tmpfs of ``dir_options``
    (a size limit: no filling the host's disk) holding a copy of its files, owned by
    ``owner``. ``shm``: tmpfs options for a private, writable /dev/shm.
    """
    try:
        reveals = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in plan["reveal"]]
        directory: str = plan["dir"]
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for mask in plan["masks"]:
            _mount("tmpfs", mask, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
        if plan["shm"]:
            _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, plan["shm"])
        for path, fd in reveals:  # outer paths first
            _make_mountpoint(path, os.path.isdir(f"/proc/self/fd/{fd}"))
            _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None)
            os.close(fd)
            # Best effort (no contextlib here: it is slow to import); Landlock and file
            # modes keep it read-only anyway.
            try:  # noqa: SIM105
                _mount("none", path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
            except OSError:
                pass
        _make_mountpoint(directory, True)
        _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, plan["dir_options"])
        _copy_tree(dir_fd, directory, plan["owner"])
        os.close(dir_fd)
        for mask in plan["masks"]:  # nothing may be created in the masks any more
            _mount("none", mask, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    except OSError as exc:
        raise SetupError("mounts", str(exc)) from exc


# ---------------------------------------------------------------- worker containment


def apply_rlimits(limits: list[list[Any]]) -> None:
    """Set each ``[name, soft, hard]`` (never above the current hard limit)."""
    import resource

    for name, soft, hard in limits:
        which = getattr(resource, f"RLIMIT_{name}")
        _, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as exc:
            raise SetupError("rlimits", f"RLIMIT_{name} {soft}/{hard}: {exc}") from exc


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid without supplementary groups (irreversibly)."""
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise SetupError("privileges", f"cannot switch to uid {uid}: {exc}") from exc
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        raise SetupError("privileges", "uid/gid did not change")


def _drop_capabilities() -> None:
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    data = (Data * 2)()
    if _c().capset(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise SetupError("userns", str(_oserror("capset")))


def enter_user_namespace(uid: int, gid: int) -> None:
    """Move into a new user namespace mapping only ``uid``/``gid`` to themselves.

    RLIMIT_NPROC counts the processes of a uid *per user namespace* (Linux >= 5.15):
    in a namespace of its own, an evaluation's limit is not shared with every other
    evaluation running as the same uid. The capabilities a process gets in a user
    namespace it creates are dropped at once.
    """
    libc = _c()
    if libc.unshare(_CLONE_NEWUSER) != 0:
        raise SetupError("userns", str(_oserror("unshare(CLONE_NEWUSER)")))
    # Changing uid made the process non-dumpable, which makes its /proc files root's.
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as exc:
        raise SetupError("userns", f"cannot write the id maps: {exc}") from exc
    finally:
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    _drop_capabilities()


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _add_rule(ruleset: int, path: str, access: int) -> None:
    import ctypes

    class PathBeneathAttr(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SetupError("landlock", f"cannot open {path}: {exc}") from exc
    try:
        if not os.path.isdir(path):
            access &= _FILE_RIGHTS
        attr = PathBeneathAttr(access, fd)
        rc = _c().syscall(
            _SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(attr), ctypes.c_uint32(0)
        )
        if rc != 0:
            raise SetupError("landlock", str(_oserror(f"landlock_add_rule({path})")))
    finally:
        os.close(fd)


def apply_landlock(spec: dict[str, Any]) -> None:
    """Restrict this process and its future children to the paths in ``spec``.

    ``spec``: ``abi`` (the running kernel's Landlock ABI), ``read`` (read + execute),
    ``list`` (directory listing only), ``write`` (everything), ``devices`` (read +
    write files, e.g. /dev/null), ``deny_tcp`` (handle TCP bind/connect with no rule
    allowing them, ABI >= 4). Access rights the ABI does not know are masked out.
    Signals and abstract unix sockets are scoped to the sandbox on ABI >= 6.
    """
    import ctypes

    class RulesetAttr(ctypes.Structure):
        _fields_ = [
            ("handled_access_fs", ctypes.c_uint64),
            ("handled_access_net", ctypes.c_uint64),
            ("scoped", ctypes.c_uint64),
        ]

    abi = int(spec["abi"])
    fs = _fs_rights(abi)
    attr = RulesetAttr(fs, 0, 0)
    size = 8
    if abi >= 4:
        size = 16
        if spec["deny_tcp"]:
            attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
    if abi >= 6:
        size = 24
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
    libc = _c()
    ruleset = libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        raise SetupError("landlock", str(_oserror("landlock_create_ruleset")))
    try:
        for path in spec["read"]:
            _add_rule(ruleset, path, _READ_RIGHTS & fs)
        for path in spec["list"]:
            _add_rule(ruleset, path, _FS_READ_DIR)
        for path in spec["devices"]:
            _add_rule(ruleset, path, (_FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE) & fs)
        for path in spec["write"]:
            _add_rule(ruleset, path, fs)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SetupError("landlock", str(_oserror("prctl(PR_SET_NO_NEW_PRIVS)")))
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise SetupError("landlock", str(_oserror("landlock_restrict_self")))
    finally:
        os.close(ruleset)


def new_session_keyring(syscall_number: int) -> None:
    """Join a new, empty session keyring: the coordinator's keys are out of reach."""
    if _c().syscall(syscall_number, _KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        raise SetupError("keyring", str(_oserror("keyctl(KEYCTL_JOIN_SESSION_KEYRING)")))


def contain(config: dict[str, Any]) -> None:
    """Apply the worker's layers: keyring, rlimits, uid drop, user namespace, Landlock."""
    if config["keyctl"] is not None:
        new_session_keyring(config["keyctl"])
    limits: list[list[Any]] = config["rlimits"]
    apply_rlimits([limit for limit in limits if limit[0] != "NPROC"])
    if config["uid"] is not None:
        drop_privileges(config["uid"], config["gid"])
        if config["userns"]:
            enter_user_namespace(config["uid"], config["gid"])
    # After the user namespace: its parent-level count is capped by the RLIMIT_NPROC
    # in force when it was created (see enforced_nproc_rlimit in the kernel).
    apply_rlimits([limit for limit in limits if limit[0] == "NPROC"])
    if _c().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("privileges", str(_oserror("prctl(PR_SET_NO_NEW_PRIVS)")))
    if config["landlock"] is not None:
        apply_landlock(config["landlock"])


# ---------------------------------------------------------------- the candidate


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


def _describe(value: Any) -> str:
    return type(value).__name__


def check_metrics(
    result: Any, evaluator: str, config: dict[str, Any]
) -> tuple[dict[str, float] | None, str]:
    """``(metrics, "")`` for a dict of str to finite numbers, else ``(None, why)``.

    ints and floats (and numpy's numbers) are accepted; bools, NaN and infinities not;
    at most ``config["max_metrics"]`` names of 1 to ``config["max_metric_name"]``
    characters.
    """
    import math
    import numbers

    if not isinstance(result, dict):
        return None, (
            f"bad metrics: {evaluator}() returned {_describe(result)}, "
            "expected a dict of str to numbers"
        )
    most, longest = config["max_metrics"], config["max_metric_name"]
    if len(result) > most:
        return None, f"bad metrics: {len(result)} metrics, more than {most}"
    metrics: dict[str, float] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            return None, f"bad metrics: key {key!r} is {_describe(key)}, expected str"
        if not 0 < len(key) <= longest:
            return None, f"bad metrics: a name of {len(key)} characters (1 to {longest})"
        is_bool = isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")
        if is_bool or not isinstance(value, numbers.Real):
            return None, f"bad metrics: {key!r} is {_describe(value)}, expected a number"
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError) as exc:
            return None, f"bad metrics: {key!r} cannot be a float: {exc}"
        if not math.isfinite(number):
            return None, f"bad metrics: {key!r} is {number}, expected a finite number"
        metrics[key] = number
    return metrics, ""


def _failure(exc: BaseException, config: dict[str, Any]) -> dict[str, Any]:
    import errno

    name = type(exc).__name__
    try:
        text = _one_line(str(exc))
    except BaseException:
        text = "(its message cannot be printed)"
    if isinstance(exc, MemoryError):
        error = f"memory limit ({config['memory_mb']} MB) exceeded: {name}"
        return {"type": "result", "kind": "memory", "error": error + (f": {text}" if text else "")}
    error = f"crashed: {name}" + (f": {text}" if text else "")
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        error += f" (process limit {config['max_processes']} reached?)"
    return {"type": "result", "kind": "crash", "error": _one_line(error)}


def _print_traceback(exc: BaseException) -> None:
    """The traceback on stderr, without the runner's own frames when possible."""
    import traceback

    tb = exc.__traceback__
    ours = _print_traceback.__code__.co_filename  # (__file__ is the .pyc when run as one)
    while tb is not None and tb.tb_frame.f_code.co_filename == ours:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """Import the candidate, call its evaluator and check the metrics."""
    import importlib

    module = importlib.import_module("candidate")
    evaluator: str = config["evaluator"]
    func = getattr(module, evaluator, None)
    if not callable(func):
        raise AttributeError(f"candidate.py defines no callable {evaluator!r}")
    target: str | None = config["target"]
    if target is None:
        result = func()
    else:
        if not hasattr(module, target):
            raise AttributeError(f"candidate.py defines no {target!r}")
        result = func(getattr(module, target))
    metrics, problem = check_metrics(result, evaluator, config)
    if metrics is None:
        return {"type": "result", "kind": "bad_metrics", "error": problem}
    return {"type": "result", "kind": "ok", "metrics": metrics}


# ---------------------------------------------------------------- evaluator and candidate
#
# With a target, the evaluator (the user's trusted code, from the original file) and
# the candidate run in two processes. The evaluator's process forks the candidate's
# before any candidate code exists in it; the candidate's process closes every
# descriptor but its two pipes (so never the result pipe), enters a Landlock domain
# nested in the evaluator's (it can neither ptrace nor signal the evaluator) and is
# non-dumpable like the evaluator (no /proc/<pid>/mem, fd or environ of it). A call
# of the candidate function in the evaluator crosses as data: frames of a JSON
# header (values tagged by type) followed by raw buffers (bytes, numpy arrays);
# nothing is unpickled and no live object crosses.

_MAX_DEPTH = 100
_MAX_BUFFERS = 10_000
_MAX_DIMENSIONS = 32  # numpy's own limit is 32 (64 in numpy 2)
_NUMERIC_KINDS = "biufc"


class CandidateError(Exception):
    """The candidate failed during a call of it (raised in the evaluator)."""

    def __init__(self, kind: str, error: str) -> None:
        super().__init__(error)
        self.kind = kind
        self.error = error


class FrameError(Exception):
    """A frame on a call pipe is not well-formed data."""


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes, or None at end of file before the first byte."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise FrameError(f"the pipe closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, header: dict[str, Any], buffers: list[bytes]) -> None:
    """One frame: header length and buffer count, the JSON header, each buffer sized."""
    import json

    head = json.dumps(header, separators=(",", ":")).encode("utf-8", "surrogatepass")
    parts = [len(head).to_bytes(8, "big"), len(buffers).to_bytes(8, "big"), head]
    for buffer in buffers:
        parts.append(len(buffer).to_bytes(8, "big"))
        parts.append(buffer)
    _write_all(fd, b"".join(parts))


def read_frame(fd: int, limit: int) -> tuple[dict[str, Any], list[bytes]] | None:
    """The next frame (None at end of file); FrameError when it is not one we accept."""
    import json

    sizes = _read_exact(fd, 16)
    if sizes is None:
        return None
    head_len, count = int.from_bytes(sizes[:8], "big"), int.from_bytes(sizes[8:], "big")
    if head_len > limit:
        raise FrameError(f"a message of {head_len} bytes, more than the limit of {limit}")
    if count > _MAX_BUFFERS:
        raise FrameError(f"{count} buffers in one message, more than {_MAX_BUFFERS}")
    head = _read_exact(fd, head_len) or b""
    total = head_len
    buffers: list[bytes] = []
    for _ in range(count):
        size_bytes = _read_exact(fd, 8)
        if size_bytes is None:
            raise FrameError("the pipe closed inside a message")
        size = int.from_bytes(size_bytes, "big")
        total += size
        if total > limit:
            raise FrameError(f"a message of more than {limit} bytes")
        buffers.append(_read_exact(fd, size) or b"")
    try:
        header = json.loads(head.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"not JSON: {_one_line(str(exc))}") from None
    if not isinstance(header, dict):
        raise FrameError("not a message")
    return header, buffers


def _numpy() -> Any:
    import numpy

    return numpy


def encode(value: Any, buffers: list[bytes], depth: int = 0) -> Any:
    """``value`` as tagged JSON (buffers appended): plain data only, nothing live."""
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int or kind is float:
        return value
    if depth >= _MAX_DEPTH:
        raise ValueError(f"data nested deeper than {_MAX_DEPTH} levels")
    if kind is list or kind is tuple:
        return {"l" if kind is list else "t": [encode(v, buffers, depth + 1) for v in value]}
    if kind is dict:
        return {
            "d": [
                [encode(k, buffers, depth + 1), encode(v, buffers, depth + 1)]
                for k, v in value.items()
            ]
        }
    if kind is complex:
        return {"c": [value.real, value.imag]}
    if kind is bytes or kind is bytearray:
        buffers.append(bytes(value))
        return {"b": len(buffers) - 1}
    return _encode_other(value, buffers, depth)


def _encode_other(value: Any, buffers: list[bytes], depth: int) -> Any:
    """Arrays and numbers of numpy, and subclasses of the plain types."""
    kind = type(value)
    if kind.__module__ == "numpy":
        np = _numpy()
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.ascontiguousarray(value)
            if array.dtype.kind not in _NUMERIC_KINDS:
                raise TypeError(f"cannot send a numpy array of dtype {array.dtype}")
            buffers.append(array.tobytes())
            tag = "a" if isinstance(value, np.ndarray) else "s"
            return {tag: [array.dtype.str, list(array.shape), len(buffers) - 1]}
    # Subclasses of the plain types cross as their plain value (their own methods
    # never run on the other side).
    if isinstance(value, (list, tuple, dict)):
        plain: Any = (list if isinstance(value, list) else tuple)(value)
        if isinstance(value, dict):
            plain = dict(value)
        return encode(plain, buffers, depth)
    for base in (int, float, str, complex):
        if isinstance(value, base):
            return encode(_plain_scalar(value, base), buffers, depth)
    raise TypeError(
        f"cannot send {kind.__name__}: only plain data (None, bool, int, float, complex, "
        "str, bytes, list, tuple, dict, numpy arrays) crosses between candidate and evaluator"
    )


def _plain_scalar(value: Any, base: type) -> Any:
    if base is int:
        return int.__index__(value)
    if base is float:
        return float.__float__(value)
    if base is complex:
        return complex(float.__float__(value.real), float.__float__(value.imag))
    return str.__str__(value)


def decode(tree: Any, buffers: list[bytes], depth: int = 0) -> Any:
    """The inverse of :func:`encode`, checking everything (FrameError otherwise)."""
    kind = type(tree)
    if tree is None or kind is bool or kind is str or kind is int or kind is float:
        return tree
    if depth >= _MAX_DEPTH:
        raise FrameError(f"data nested deeper than {_MAX_DEPTH} levels")
    if kind is not dict or len(tree) != 1:
        raise FrameError(f"unexpected {kind.__name__} in a message")
    ((tag, body),) = tree.items()
    return _decode_tagged(tag, body, buffers, depth)


def _decode_tagged(tag: str, body: Any, buffers: list[bytes], depth: int) -> Any:
    if tag in ("l", "t") and type(body) is list:
        items = [decode(v, buffers, depth + 1) for v in body]
        return items if tag == "l" else tuple(items)
    if tag == "d" and type(body) is list:
        out: dict[Any, Any] = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise FrameError("a dict item is not a pair")
            key = decode(pair[0], buffers, depth + 1)
            try:
                out[key] = decode(pair[1], buffers, depth + 1)
            except TypeError:
                raise FrameError(f"unhashable dict key: {type(key).__name__}") from None
        return out
    if tag == "c" and type(body) is list and len(body) == 2:
        re, im = body
        if type(re) not in (int, float) or type(im) not in (int, float):
            raise FrameError("a complex number needs two numbers")
        return complex(re, im)
    if tag == "b" and type(body) is int and 0 <= body < len(buffers):
        return buffers[body]
    if tag in ("a", "s") and type(body) is list and len(body) == 3:
        return _decode_array(tag, body, buffers)
    raise FrameError(f"unknown tag {tag!r} in a message")


def _decode_array(tag: str, body: list[Any], buffers: list[bytes]) -> Any:
    dtype_text, shape, index = body
    if type(dtype_text) is not str or type(shape) is not list or type(index) is not int:
        raise FrameError("a malformed array")
    if not 0 <= index < len(buffers) or any(type(n) is not int or n < 0 for n in shape):
        raise FrameError("a malformed array")
    if len(shape) > _MAX_DIMENSIONS:
        raise FrameError(f"an array of {len(shape)} dimensions, more than {_MAX_DIMENSIONS}")
    np = _numpy()
    try:
        dtype = np.dtype(dtype_text)
    except (TypeError, ValueError):
        raise FrameError(f"unknown dtype {dtype_text!r}") from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise FrameError(f"dtype {dtype_text!r} is not numeric")
    count = 1
    for n in shape:
        count *= n
    data = buffers[index]
    if count * dtype.itemsize != len(data) or (tag == "s" and shape):
        raise FrameError("an array's size does not match its data")
    try:
        array = np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise FrameError(f"a malformed array: {_one_line(str(exc))}") from None
    return array[()] if tag == "s" else array


def _reply_failure(fd: int, exc: BaseException, config: dict[str, Any]) -> None:
    message = _failure(exc, config)
    try:  # noqa: SIM105
        _print_traceback(exc)
    except BaseException:
        pass
    _flush()
    try:
        write_frame(fd, {"raise": {"kind": message["kind"], "error": message["error"]}}, [])
    except OSError:
        os._exit(1)


def enter_candidate_domain(config: dict[str, Any]) -> None:
    """Cut the candidate's process off from the evaluator's, in the forked child.

    A user namespace of its own: whatever capabilities it had (as root of the
    sandbox's user namespace, where no uid drop is possible) it keeps only over
    itself, so ptrace and ``/proc/<pid>/fd`` of the non-dumpable evaluator and pid 1
    stay closed. A Landlock domain nested in the evaluator's, allowing writes to its
    own directory only: the evaluator's files are neither readable nor writable.
    """
    try:
        enter_user_namespace(os.getuid(), os.getgid())
    except SetupError:
        _drop_capabilities()  # no user namespaces here: at least no capabilities
    if config["candidate_landlock"] is not None:
        apply_landlock(config["candidate_landlock"])
    home: str = config["candidate_dir"]
    os.chdir(home)
    os.environ["HOME"] = os.environ["TMPDIR"] = home
    tempfile: Any = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # found again, from TMPDIR


def serve_candidate(config: dict[str, Any], calls: int, replies: int) -> None:
    """Be the candidate's process: import it, then answer calls until the pipe closes."""
    import importlib

    limit: int = config["max_message_bytes"]
    sys.path[:] = [config["candidate_dir"], *config["sys_path"]]
    me = os.getpid()
    target: str = config["target"]
    try:
        func = getattr(importlib.import_module("candidate"), target, None)
        if not callable(func):
            raise AttributeError(f"candidate.py defines no callable {target!r}")
    except BaseException as exc:
        if os.getpid() != me:
            os._exit(1)
        _reply_failure(replies, exc, config)
        os._exit(1)
    write_frame(replies, {"ready": True}, [])
    while True:
        try:
            frame = read_frame(calls, limit)
        except (FrameError, OSError):
            os._exit(1)
        if frame is None:
            _flush()
            os._exit(0)
        try:
            tree, out = _answer(func, frame, limit)
        except BaseException as exc:  # the candidate may raise anything, SystemExit included
            if os.getpid() != me:  # a child the candidate forked: say nothing
                os._exit(1)
            _reply_failure(replies, exc, config)
            continue
        if os.getpid() != me:
            os._exit(0)
        try:
            write_frame(replies, {"ok": tree}, out)
        except OSError:
            os._exit(1)


def _answer(
    func: Any, frame: tuple[dict[str, Any], list[bytes]], limit: int
) -> tuple[Any, list[bytes]]:
    """Call the candidate with a call frame's arguments; its answer, encoded."""
    header, buffers = frame
    value = func(*decode(header["args"], buffers), **decode(header["kwargs"], buffers))
    out: list[bytes] = []
    tree = encode(value, out)
    size = sum(len(b) for b in out)
    if size > limit:
        raise ValueError(f"the answer holds {size} bytes, more than the limit of {limit}")
    return tree, out


class Candidate:
    """The candidate function as the evaluator sees it: each call crosses as data."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._name: str = config["target"]
        self._limit: int = config["max_message_bytes"]
        self._failure: CandidateError | None = None
        self.raised: CandidateError | None = None  # the last error this proxy raised
        calls_r, calls_w = os.pipe()
        replies_r, replies_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(calls_w)
                os.close(replies_r)
                keep = sorted((0, 1, 2, calls_r, replies_w))
                for low, high in zip(keep, [*keep[1:], 1 << 16], strict=True):
                    os.closerange(low + 1, high)
                enter_candidate_domain(config)
                serve_candidate(config, calls_r, replies_w)
            except SetupError as exc:
                _write_all(2, f"sandbox: {exc}\n".encode())
            finally:
                os._exit(4)
        os.close(calls_r)
        os.close(replies_w)
        self.pid = pid
        self._calls = calls_w
        self._replies = replies_r
        self._ready = False
        self._cpu_s = 0.0

    def __repr__(self) -> str:
        return f"<candidate function {self._name}() in a process of its own>"

    @property
    def cpu_s(self) -> float:
        """CPU seconds the candidate's process (and children it waited for) used so far.

        The evaluator's own ``time.process_time()`` does not see them: the candidate
        runs in another process. Read from the kernel, not from the candidate.
        """
        if self.pid:
            try:
                with open(f"/proc/{self.pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
                self._cpu_s = ticks / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                pass
        return self._cpu_s

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._failure is None:
            try:
                return self._call(args, kwargs)
            except CandidateError as exc:
                self._failure = exc
        self.raised = self._failure
        raise self._failure

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._ready:
            self._receive(ready=True)
            self._ready = True
        buffers: list[bytes] = []
        header = {"args": encode(args, buffers), "kwargs": encode(kwargs, buffers)}
        try:
            write_frame(self._calls, header, buffers)
        except BrokenPipeError:
            raise self._ended() from None
        return self._receive()

    def _receive(self, ready: bool = False) -> Any:
        try:
            frame = read_frame(self._replies, self._limit)
        except FrameError as exc:
            self.stop()
            raise CandidateError("crash", f"crashed: its answer is not data: {exc}") from None
        if frame is None:
            raise self._ended()
        header, buffers = frame
        if "raise" in header:
            info = header["raise"]
            kind = info.get("kind") if isinstance(info, dict) else None
            error = info.get("error") if isinstance(info, dict) else None
            if kind not in ("crash", "memory") or not isinstance(error, str):
                kind, error = "crash", "crashed: sent a malformed error"
            raise CandidateError(kind, _one_line(error))
        if ready and header.get("ready") is True:
            return None
        if ready or "ok" not in header:
            self.stop()
            raise CandidateError("crash", "crashed: sent a reply that is not an answer")
        try:
            return decode(header["ok"], buffers)
        except FrameError as exc:
            self.stop()
            raise CandidateError("crash", f"crashed: its answer is not data: {exc}") from None

    def _ended(self) -> CandidateError:
        """The candidate's process ended during a call: why."""
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = None
        self.pid = 0
        if code is None:
            return CandidateError("crash", "crashed: the candidate's process vanished")
        if code == -24:  # SIGXCPU
            return CandidateError("timeout", "cpu time limit of the candidate exceeded (SIGXCPU)")
        if code < 0:
            return CandidateError("crash", f"crashed: the candidate was killed by signal {-code}")
        return CandidateError("crash", f"crashed: the candidate exited with code {code}")

    def stop(self) -> None:
        """Kill the candidate's process (and so nothing it does can reach the evaluator)."""
        if self.pid:
            self._cpu_s = self.cpu_s
            try:  # noqa: SIM105
                os.kill(self.pid, 9)
            except OSError:
                pass
            try:  # noqa: SIM105
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def load_evaluator(config: dict[str, Any]) -> Any:
    """The evaluator's module, from the target file as the user wrote it.

    Never from the candidate's copy, and with a ``sys.path`` that does not hold the
    evaluation directory (where the candidate could plant modules).
    """
    import types

    path = os.path.join(config["dir"], config["evaluator_file"])
    with open(path, "rb") as f:
        source = f.read()
    os.unlink(path)
    sys.path[:] = list(config["sys_path"])
    module = types.ModuleType("evaluator")
    module.__file__ = config["evaluator_label"]
    sys.modules["evaluator"] = module
    exec(compile(source, config["evaluator_label"], "exec"), module.__dict__)
    return module


def judge(config: dict[str, Any]) -> None:
    """Be the evaluator's process: load the evaluator, call it on the candidate, report."""
    fd: int = config["fd"]
    _c().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace, no /proc/<pid>/mem for others
    evaluator_name: str = config["evaluator"]
    send(fd, {"type": "start"})
    candidate: Candidate | None = None
    message: dict[str, Any]
    code = 0
    try:
        # The candidate's process is forked first: nothing of the evaluator's module
        # (its data, its random generators' states) is ever in it. Only our own
        # library is imported before, once for both (see _IMPORTS_AMBIDEX).
        sys.path[:] = list(config["sys_path"])
        for name in config["preload"]:
            __import__(name)
        candidate = Candidate(config)
        module = load_evaluator(config)
        func = getattr(module, evaluator_name, None)
        if not callable(func):
            raise AttributeError(
                f"{config['evaluator_label']} defines no callable {evaluator_name!r}"
            )
        result = func(candidate)
        candidate.stop()
        metrics, problem = check_metrics(result, evaluator_name, config)
        if metrics is None:
            message = {"type": "result", "kind": "bad_metrics", "error": problem}
        else:
            message = {"type": "result", "kind": "ok", "metrics": metrics}
    except BaseException as exc:  # the evaluator may raise anything, the candidate's errors too
        if candidate is not None:
            candidate.stop()
        code = 1
        if candidate is not None and exc is candidate.raised:
            message = {"type": "result", "kind": exc.kind, "error": exc.error}
        elif isinstance(exc, MemoryError):
            message = _failure(exc, config)
        else:
            message = {
                "type": "result",
                "kind": "rejected",
                "error": "rejected" + _failure(exc, config)["error"].removeprefix("crashed"),
            }
            try:  # noqa: SIM105
                _print_traceback(exc)
            except BaseException:
                pass
    _flush()
    send(fd, message)
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is slow to import)
            stream.flush()
        except Exception:
            pass


def work(config: dict[str, Any]) -> None:
    """Be the worker: contain this process, run the evaluation, report, ``_exit``."""
    fd: int = config["fd"]
    try:
        contain(config)
    except SetupError as exc:
        send(fd, {"type": "setup_error", "layer": exc.layer, "error": exc.error})
        os._exit(3)
    directory: str = config["dir"]
    os.chdir(directory)
    sys.dont_write_bytecode = True
    if config["target"] is not None:
        judge(config)
    sys.path[:] = [directory, *config["sys_path"]]
    main_pid = os.getpid()
    code = 0
    # From here on the candidate runs and could write anything to the pipe: the parent
    # believes no setup_error that comes after this line.
    send(fd, {"type": "start"})
    try:
        message = evaluate(config)
    except BaseException as exc:  # the candidate may raise anything, SystemExit included
        if os.getpid() != main_pid:  # a child the candidate forked: say nothing
            os._exit(1)
        message = _failure(exc, config)
        code = 1
        try:  # noqa: SIM105
            _print_traceback(exc)
        except BaseException:
            pass
    if os.getpid() != main_pid:
        os._exit(0)
    _flush()
    send(fd, message)
    os._exit(code)


def supervise(config: dict[str, Any], lifeline: int) -> None:
    """Be pid 1: fork the worker, reap orphans, report the worker's exit status.

    The worker must not be pid 1 itself: the kernel drops signals without a handler
    sent to a namespace's init, which would defeat RLIMIT_CPU's SIGXCPU. A thread
    watches the lifeline: if the parent dies, pid 1 exits and the namespace with it.
    """
    # Nobody in the namespace may reach pid 1's descriptors (the result pipe) through
    # /proc/1/fd or ptrace, even where no uid drop or Landlock separates them.
    _c().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(lifeline)
            work(config)
        finally:
            os._exit(4)
    _thread.start_new_thread(watch_lifeline, (lifeline,))
    status = 0
    while True:
        try:
            done, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if done == pid:
            status = os.waitstatus_to_exitcode(wait_status)
            break
    send(config["fd"], {"type": "exit", "status": status})
    os._exit(0)


def watch_lifeline(fd: int) -> None:
    """In a thread: when the parent dies (EOF on the lifeline pipe), end the evaluation.

    As pid 1 exiting takes the whole pid namespace with it; otherwise the process group
    is killed.
    """
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    if os.getpid() == 1:
        os._exit(1)
    os.killpg(0, 9)  # SIGKILL (the signal module is slow to import)


def main(argv: list[str]) -> None:
    """Entry point: ``_runner.py RESULT_FD LIFELINE_FD CGROUP_PROCS_FILE CONFIG_JSON``."""
    fd, lifeline = int(argv[1]), int(argv[2])
    # uvloop does not close inherited descriptors: keep only stdio and our two pipes.
    low, high = sorted((fd, lifeline))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 16)
    join = CgroupJoin(argv[3])
    import json

    config: dict[str, Any] = json.loads(argv[4])
    config["fd"] = fd
    try:
        join.wait()
        if config["mounts"] is not None:
            apply_mounts(config["mounts"])
    except SetupError as exc:
        send(fd, {"type": "setup_error", "layer": exc.layer, "error": exc.error})
        os._exit(3)
    if os.getpid() == 1:
        supervise(config, lifeline)
    _thread.start_new_thread(watch_lifeline, (lifeline,))
    work(config)


if __name__ == "__main__":
    main(sys.argv)
