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

This module is the sandbox's public face. The work is done in three modules:
:mod:`~ambidex.evolve._probe` finds what the machine allows (once per process),
:mod:`~ambidex.evolve._plan` prepares what one evaluation will use (its directory,
cgroups, limits and the runner's command), and :mod:`~ambidex.evolve._supervise`
starts, watches and kills it and collects its result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ambidex.evolve import _plan, _probe, _supervise
from ambidex.evolve._supervise import EvalResult, SandboxError
from ambidex.runtime import to_thread

__all__ = ["EvalResult", "Sandbox", "SandboxError"]


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
        return _plan.describe(self, _capabilities())

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
        caps = _probe.known()
        if caps is None:
            caps = await to_thread(_capabilities)  # blocks ~0.1 s, once per process
        contents, preload = _plan.contents(source, target, files, evaluator_source)
        job = _plan.prepare(
            self, source, evaluator, target, contents, caps, evaluator_path, preload
        )
        return await _supervise.supervise(self, job)


def _capabilities() -> _probe.Capabilities:
    """The machine's capabilities, probed (with trial evaluations) on first use."""
    return _probe.capabilities(_trial)


_TRIAL_SOURCE = "def evaluate():\n    return {'probe': 1.0}\n"


def _trial(caps: _probe.Capabilities) -> tuple[str, str]:
    """Evaluate a trivial candidate under ``caps``: which layer failed, and why ("" if none)."""
    job = _plan.prepare(Sandbox(timeout_s=20.0), _TRIAL_SOURCE, "evaluate", None, [], caps)
    try:
        raw = _supervise.run_sync(job, timeout_s=20.0)
    finally:
        job.cleanup_sync()
    return _trial_problem(raw)


def _trial_problem(raw: _supervise.Raw) -> tuple[str, str]:
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
