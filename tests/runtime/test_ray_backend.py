"""The ray backend: the same cpu calls, sweeps and evaluations as Ray tasks, same results.

One local Ray instance (``ray.init(num_cpus=2)``) serves the whole module; the
runtimes under test join it and leave it running. The tests of Ray's first
start each run a fresh process, where no Ray is running yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ambidex as ax

ray = pytest.importorskip("ray", reason="the ray backend needs ray: pip install 'ambidex[ray]'")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sim"))

from sim_toy_models import Exchange  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def ray_rt(ray_cluster: None) -> Iterator[ax.Runtime]:
    with ax.Runtime(backend="ray", cpu_workers=2, io_threads=8) as rt:
        yield rt


@ax.cpu
def where(x: int) -> tuple[int, int]:
    return x * 2, os.getpid()


@ax.cpu
def fails(message: str) -> None:
    raise KeyError(message)


@ax.cpu(timeout_s=1.0)
def sleeps(seconds: float) -> None:
    time.sleep(seconds)


@ax.cpu
def dies() -> None:
    os._exit(7)


@ax.cpu
def naps(x: int) -> int:
    time.sleep(0.1)
    return x


@ax.cpu
def odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_importing_ambidex_does_not_import_ray() -> None:
    code = "import sys, ambidex, ambidex.sim, ambidex.evolve; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_a_cpu_call_runs_as_a_ray_task(ray_rt: ax.Runtime) -> None:
    value, pid = where(21)
    assert value == 42
    assert pid != os.getpid()
    assert [r[0] for r in where.map([1, 2, 3])] == [2, 4, 6]
    assert ray_rt.statistics().backend == "ray"


def test_errors_travel_back_with_their_type_and_remote_traceback(ray_rt: ax.Runtime) -> None:
    with pytest.raises(KeyError, match="nope") as info:
        fails("nope")
    assert isinstance(info.value.__cause__, ax.RemoteTraceback)
    assert "raise KeyError(message)" in str(info.value.__cause__)


def test_a_timeout_kills_the_ray_task(ray_rt: ax.Runtime) -> None:
    started = time.perf_counter()
    with pytest.raises(ax.TaskTimeoutError, match="its Ray worker was killed"):
        sleeps(30)
    assert time.perf_counter() - started < 5


def test_a_dead_ray_worker_is_reported_like_a_dead_local_worker(ray_rt: ax.Runtime) -> None:
    with pytest.raises(ax.WorkerCrashedError, match="dies"):
        dies()
    assert where(1)[0] == 2  # the backend goes on
    stats = ray_rt.statistics().cpu_workers
    assert stats is not None
    assert stats.crashed == 1


def test_map_on_ray_submits_untimed_calls_at_once(ray_rt: ax.Runtime) -> None:
    assert ray_rt.cpu_in_flight(timed=False) == 1024
    assert ray_rt.cpu_in_flight(timed=True) == 4  # a deadline must not run while queued in Ray
    got: list[int] = []
    mapping = threading.Thread(target=lambda: got.extend(naps.map(range(24))))
    mapping.start()
    peak = 0
    while mapping.is_alive():
        stats = ray_rt.statistics().cpu_workers
        peak = max(peak, stats.busy if stats is not None else 0)
        time.sleep(0.005)
    mapping.join()
    assert got == list(range(24))  # in input order
    assert peak == 24  # all submitted at once: Ray queues what its 2 CPUs cannot run yet


def test_map_on_ray_keeps_its_error_semantics(ray_rt: ax.Runtime) -> None:
    out = odd_fails.map(range(40), return_exceptions=True)
    assert [x if isinstance(x, int) else str(x) for x in out] == [
        x if x % 2 == 0 else f"odd {x}" for x in range(40)
    ]
    with pytest.raises(ValueError, match="odd"):
        odd_fails.map(range(40))
    stats = ray_rt.statistics().cpu_workers
    assert stats is not None
    assert stats.busy == 0  # the first error cancelled the rest
    assert where.map([5])[0][0] == 10  # and the backend goes on


def test_map_on_ray_keeps_each_calls_timeout(ray_rt: ax.Runtime) -> None:
    started = time.perf_counter()
    out = sleeps.map([30] * 16, max_in_flight=16, return_exceptions=True)  # 16: waited as a batch
    assert all(isinstance(x, ax.TaskTimeoutError) for x in out), out
    assert time.perf_counter() - started < 20  # not 8 x 30 s
    assert where(1)[0] == 2


# A fresh process (no Ray yet) whose first cpu calls arrive at once. It counts
# the calls to ray.init and prints what every caller got and which of its
# child processes are left once the runtime has closed.
_FIRST_CALLS = """
import asyncio, sys, threading
import psutil, ray
import ambidex as ax

inits = []
real_init = ray.init

def counting_init(*args, **kwargs):
    inits.append(threading.current_thread().name)
    real_init(*args, **kwargs)
    if sys.argv[1] == "failing":
        raise ValueError("no room for Ray here")

ray.init = counting_init

@ax.cpu
def double(x):
    return 2 * x

async def tasks(n):
    return await asyncio.gather(*(double.aio(i) for i in range(n)), return_exceptions=True)

def at_once(*calls):
    barrier = threading.Barrier(len(calls))
    got = []

    def call(fn):
        barrier.wait()
        try:
            got.append(fn())
        except BaseException as exc:
            got.append(exc)

    threads = [threading.Thread(target=call, args=(fn,)) for fn in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got

mode = sys.argv[1]
if mode == "runtimes":
    first, second = (ax.Runtime(backend="ray", cpu_workers=2) for _ in range(2))
    got = at_once(lambda: ray.get(first.put(2)), lambda: ray.get(second.put(4)))
    first.close()  # the second runtime still uses the Ray one of them started
    with second:
        got.append(double(3))
else:
    with ax.Runtime(backend="ray", cpu_workers=2) as rt:
        if mode == "tasks":
            got = asyncio.run(tasks(3))
        elif mode == "mixed":
            got = at_once(
                lambda: double(0), lambda: asyncio.run(tasks(2)), lambda: ray.get(rt.put(42))
            )
        else:
            got = at_once(lambda: double(0), lambda: double(1), lambda: double(2))
print("inits", len(inits))
print("got", sorted(map(repr, got)))
print("left", sorted(p.name() for p in psutil.Process().children(recursive=True)))
"""


_STARTS_RAY = pytest.mark.timeout(180)


def _first_calls(mode: str, tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "first_calls.py"
    script.write_text(_FIRST_CALLS)
    out = subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=150,  # starting Ray takes 5 s here, 30 s on a loaded 2-CPU machine
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    return lines


@_STARTS_RAY
def test_first_calls_from_several_threads_start_one_ray(tmp_path: Path) -> None:
    seen = _first_calls("threads", tmp_path)
    assert seen["inits"] == "1"
    assert seen["got"] == "['0', '2', '4']"
    assert seen["left"] == "[]"  # Ray shut down with the runtime that started it


@_STARTS_RAY
def test_first_calls_from_several_tasks_start_one_ray(tmp_path: Path) -> None:
    seen = _first_calls("tasks", tmp_path)
    assert seen["inits"] == "1"
    assert seen["got"] == "['0', '2', '4']"
    assert seen["left"] == "[]"


@_STARTS_RAY
def test_first_sync_async_and_put_callers_at_once_start_one_ray(tmp_path: Path) -> None:
    seen = _first_calls("mixed", tmp_path)
    assert seen["inits"] == "1"
    assert seen["got"] == "['0', '42', '[0, 2]']"
    assert seen["left"] == "[]"


@_STARTS_RAY
def test_two_runtimes_share_one_ray_until_the_last_one_closes(tmp_path: Path) -> None:
    seen = _first_calls("runtimes", tmp_path)
    assert seen["inits"] == "1"
    assert seen["got"] == "['2', '4', '6']"
    assert seen["left"] == "[]"


@_STARTS_RAY
def test_a_failed_start_is_one_error_for_every_caller_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    seen = _first_calls("failing", tmp_path)
    assert seen["inits"] == "1"
    error = "AmbidexError('could not start a local Ray: ValueError: no room for Ray here')"
    assert seen["got"] == repr([error] * 3)
    assert seen["left"] == "[]"


def _sweep(**kw: Any) -> ax.sim.SweepResult:
    bonus = np.linspace(0.0, 1.0, 500_000)
    return ax.sim.sweep(
        Exchange,
        {"n": [60, 120], "p": [0.3, 0.7]},
        replicates=2,
        steps=12,
        seed=9,
        inputs={"bonus": bonus},
        progress=False,
        **kw,
    )


def test_a_sweep_on_ray_is_bit_identical_to_the_local_one(ray_cluster: None) -> None:
    with ax.Runtime(cpu_workers=2):
        local = _sweep()
    with ax.Runtime(backend="ray", cpu_workers=2):
        remote = _sweep()
    assert remote.digest() == local.digest()
    assert [r.metrics.digest() for r in remote.runs] == [r.metrics.digest() for r in local.runs]


def test_large_inputs_go_through_the_object_store_once(
    ray_rt: ax.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ambidex.runtime._raypool import RayPool

    puts: list[int] = []
    real_put = RayPool.put

    def counting_put(self: RayPool, value: Any) -> Any:
        puts.append(int(getattr(value, "nbytes", 0)))
        return real_put(self, value)

    monkeypatch.setattr(RayPool, "put", counting_put)
    result = _sweep()  # 8 runs, one 4 MB input
    assert len(result.runs) == 8
    assert puts == [4_000_000]  # stored once, not once per run
    local = ax.Runtime(cpu_workers=1)
    big = np.arange(10)
    assert local.put(big) is big
    local.close()
    ref = ray_rt.put(big)
    assert isinstance(ref, ray.ObjectRef)
    assert np.array_equal(ray.get(ref), big)


def test_evolution_evaluations_run_as_ray_tasks(ray_rt: ax.Runtime, tmp_path: Path) -> None:
    quick = ROOT / "examples" / "evolve" / "quick" / "approx_pi.py"
    result = ax.evolve.evolve(
        quick, iterations=6, parallel=2, db=tmp_path / "ray.sqlite", seed=1, timeout_s=20
    )
    assert result.done == 6
    assert result.succeeded >= 1
    # every candidate's evaluation was a cpu call (a Ray task), besides the initial one
    assert ray_rt.counters.snapshot()["cpu"].succeeded >= 6
