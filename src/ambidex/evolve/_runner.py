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
   sets no_new_privs and applies a Landlock ruleset, then imports ``candidate`` and
   calls the evaluator;
5. the worker sends one JSON line over the result pipe (never stdout, which belongs to
   the candidate) and leaves with ``os._exit`` so that the candidate's threads and
   atexit hooks cannot keep it alive.

Messages (one JSON object per line): ``{"type": "start"}`` just before the candidate is
imported, then ``{"type": "result", "kind": "ok", "metrics": {...}}``,
``{"type": "result", "kind": "crash" | "bad_metrics" | "memory", "error": "..."}``,
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
    """Moves this process (and so every later child) into a cgroup, in a thread.

    Migrating a task in cgroup v1 waits for an RCU grace period (~10 ms): a thread
    does it while the main thread imports and parses; :meth:`wait` joins it.
    """

    def __init__(self, procs_file: str) -> None:
        self.error = ""
        self._done = _thread.allocate_lock()
        self._done.acquire()
        if procs_file:
            _thread.start_new_thread(self._join, (procs_file,))
        else:
            self._done.release()

    def _join(self, procs_file: str) -> None:
        try:
            with open(procs_file, "w") as f:
                f.write("0")
        except OSError as exc:
            self.error = f"cannot join {procs_file}: {exc}"
        finally:
            self._done.release()

    def wait(self) -> None:
        """Block until the join is done; raise SetupError if it failed."""
        with self._done:
            pass
        if self.error:
            raise SetupError("cgroup", self.error)


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


def contain(config: dict[str, Any]) -> None:
    """Apply the worker's layers: rlimits, uid drop, user namespace, Landlock."""
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


def check_metrics(result: Any, evaluator: str) -> tuple[dict[str, float] | None, str]:
    """``(metrics, "")`` for a dict of str to finite numbers, else ``(None, why)``.

    ints and floats (and numpy's numbers) are accepted; bools, NaN and infinities not.
    """
    import math
    import numbers

    if not isinstance(result, dict):
        return None, (
            f"bad metrics: {evaluator}() returned {_describe(result)}, "
            "expected a dict of str to numbers"
        )
    metrics: dict[str, float] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            return None, f"bad metrics: key {key!r} is {_describe(key)}, expected str"
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
    text = _one_line(str(exc))
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
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
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
    metrics, problem = check_metrics(result, evaluator)
    if metrics is None:
        return {"type": "result", "kind": "bad_metrics", "error": problem}
    return {"type": "result", "kind": "ok", "metrics": metrics}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is slow to import)
            stream.flush()
        except Exception:
            pass


def work(config: dict[str, Any]) -> None:
    """Be the worker: contain this process, run the candidate, report, ``_exit``."""
    fd: int = config["fd"]
    try:
        contain(config)
    except SetupError as exc:
        send(fd, {"type": "setup_error", "layer": exc.layer, "error": exc.error})
        os._exit(3)
    directory: str = config["dir"]
    os.chdir(directory)
    sys.path[:] = [directory, *config["sys_path"]]
    sys.dont_write_bytecode = True
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
