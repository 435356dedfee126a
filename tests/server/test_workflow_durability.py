"""A workflow job whose worker is killed (``kill -9``) mid-run finishes elsewhere, resuming.

Real processes, no mocks: two ``ambidex worker`` processes on one SQLite file,
two on a fresh PostgreSQL database, and ``ambidex serve`` killed and started
again on a SQLite file. The workflow (``durable_flow_nodes``) is a diamond:
``a`` and ``b``, then ``c`` (which waits while a gate file exists), then ``d``;
every node first appends a line (node, idempotency key, pid) to a file of its
process. The test kills the process running the job while ``c`` waits, opens
the gate, and counts: every node that had finished (checkpointed) before the
kill ran exactly once, ``c`` (running at the kill) twice, ``d`` once; each
saw the same idempotency key on both attempts; ``d``'s result carries the pids
of the killed process for ``a`` and ``b``, whose outputs were restored.
Before durable workflow jobs, the second attempt ran ``a`` and ``b`` again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _durable_support import wait_until, worker_pid
from _server_support import ServerProcess, server_process

from _pg_support import fresh_pg_database
from ambidex.jobs import Job, JobStatus, JobStore

pytestmark = pytest.mark.timeout(90)

FLOW_YAML = str(Path(__file__).with_name("durable_flow.yaml"))
FLOW_PY = str(Path(__file__).with_name("durable_flow_workload.py"))
WORKFLOW = "durable-diamond"


def effects(log_dir: Path) -> list[tuple[str, str, int]]:
    """Every side effect the nodes performed: (node, key, pid), in no particular order."""
    found = []
    for path in log_dir.glob("effects-*.log"):
        for line in path.read_text().splitlines():
            node, key, pid = line.split()
            found.append((node, key, int(pid)))
    return found


def ran(log_dir: Path) -> Counter[str]:
    return Counter(node for node, _, _ in effects(log_dir))


def worker(db: str, workloads: str, log: Path) -> ServerProcess:
    return ServerProcess(
        "worker",
        "--db",
        db,
        "--workloads",
        workloads,
        "--concurrency",
        "2",
        "--lease-s",
        "2",
        log=log,
    )


@pytest.fixture
def flow_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The effects directory, and the gate that holds node ``c`` (closed: it exists)."""
    log_dir, gate = tmp_path / "effects", tmp_path / "gate"
    log_dir.mkdir()
    gate.touch()
    return log_dir, gate


def flow_input(log_dir: Path, gate: Path) -> dict[str, str]:
    return {"log_dir": str(log_dir), "gate": str(gate)}


def finished(store: JobStore, job_id: str) -> Job | None:
    job = store.get(job_id)
    return job if job is not None and job.status.terminal else None


def holder_while_c_waits(store: JobStore, job_id: str, log_dir: Path) -> int | None:
    """The pid of the worker running the job, once ``c`` has started (so a, b are stored)."""
    job = store.get(job_id)
    if job is None or job.status is not JobStatus.RUNNING or not ran(log_dir)["c"]:
        return None
    return worker_pid(job.worker)


def assert_resumed_after_the_kill(
    store: JobStore,
    job_id: str,
    log_dir: Path,
    at_kill: dict[str, str],
    victim: int,
    survivor: int | None = None,
) -> Job:
    """Every finished node ran once, c twice, d once; the job ended on its second attempt."""
    done = store.get(job_id)
    assert done is not None
    assert done.status is JobStatus.SUCCEEDED, (done.error, done.traceback)
    assert done.attempts == 2
    after = worker_pid(done.worker)
    assert after != victim
    if survivor is not None:
        assert after == survivor

    assert at_kill.get("a") == at_kill.get("b") == "succeeded", at_kill
    assert at_kill.get("c") in (None, "running"), at_kill
    assert "d" not in at_kill
    counted = ran(log_dir)
    for node, status in at_kill.items():
        if status == "succeeded":
            assert counted[node] == 1, (node, counted)  # checkpointed: never run again
    assert counted["c"] == 2, counted  # running at the kill: once more, no more
    assert counted["d"] == 1, counted
    assert set(counted) == {"a", "b", "c", "d"}
    for node, key, _ in effects(log_dir):
        assert key == f"{job_id}:{node}"  # the same idempotency key on both attempts
    pids = {(node, pid) for node, _, pid in effects(log_dir)}
    assert pids == {("a", victim), ("b", victim), ("c", victim), ("c", after), ("d", after)}

    assert done.result["nodes"]["d"]["output"] == {"a": victim, "b": victim, "c": after, "d": after}
    assert done.result["nodes"]["a"]["reason"] == "restored from the checkpoint"
    rows = {n.node: n for n in store.workflow_nodes(job_id)}
    assert {n: r.status for n, r in rows.items()} == dict.fromkeys("abcd", "succeeded")
    assert [rows[n].job_attempt for n in "abcd"] == [1, 1, 2, 2]
    assert [worker_pid(rows[n].worker) for n in "abcd"] == [victim, victim, after, after]
    kinds = [e.kind for e in store.events(job_id) if e.kind != "progress"]
    assert kinds == ["submitted", "started", "requeued", "started", "succeeded"]
    return done


def kill_the_holder_mid_node(
    store: JobStore, job_id: str, log_dir: Path, workers: dict[int, ServerProcess]
) -> tuple[int, dict[str, str]]:
    """Kill -9 the worker running the job while c waits; the checkpoints as the kill left them."""
    victim = wait_until(
        lambda: holder_while_c_waits(store, job_id, log_dir), "node c to be running", 15
    )
    workers[victim].kill9()
    at_kill = {n.node: n.status for n in store.workflow_nodes(job_id)}
    return victim, at_kill


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Started by each test on its store; both stopped (or killed) afterwards."""
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


def start_two(
    db: str, workloads: str, tmp_path: Path, into: list[ServerProcess]
) -> dict[int, ServerProcess]:
    for n in (1, 2):
        into.append(worker(db, workloads, tmp_path / f"worker-{n}.log"))
    for proc in into:
        proc.wait_for_text("ambidex worker ")
    return {proc.proc.pid: proc for proc in into}


def test_sqlite_two_workers_a_killed_worker_s_workflow_job_resumes_on_the_other(
    tmp_path: Path, flow_dirs: tuple[Path, Path], two_workers: list[ServerProcess]
) -> None:
    log_dir, gate = flow_dirs
    db = str(tmp_path / "jobs.sqlite")
    with JobStore(db) as store:  # the tables, before the workers start
        workers = start_two(db, FLOW_YAML, tmp_path, two_workers)
        job = store.submit(WORKFLOW, flow_input(log_dir, gate))
        victim, at_kill = kill_the_holder_mid_node(store, job.id, log_dir, workers)
        (survivor,) = set(workers) - {victim}
        gate.unlink()  # c may finish now: on the survivor, once the lease has lapsed
        wait_until(lambda: finished(store, job.id), "the survivor to finish the job", 30)
        assert_resumed_after_the_kill(store, job.id, log_dir, at_kill, victim, survivor)
        assert workers[survivor].proc.poll() is None


def test_postgresql_two_workers_a_killed_worker_s_workflow_job_resumes_on_the_other(
    tmp_path: Path, flow_dirs: tuple[Path, Path], two_workers: list[ServerProcess]
) -> None:
    log_dir, gate = flow_dirs
    with fresh_pg_database() as url, JobStore(url) as store:
        workers = start_two(url, FLOW_PY, tmp_path, two_workers)
        job = store.submit(WORKFLOW, flow_input(log_dir, gate))
        victim, at_kill = kill_the_holder_mid_node(store, job.id, log_dir, workers)
        (survivor,) = set(workers) - {victim}
        gate.unlink()
        wait_until(lambda: finished(store, job.id), "the survivor to finish the job", 30)
        assert_resumed_after_the_kill(store, job.id, log_dir, at_kill, victim, survivor)
        for proc in two_workers:  # before the database is dropped
            proc.stop()


def serve_args(db: Path) -> list[str]:
    return [
        *["serve", "--port", "0", "--db", str(db), "--lease-s", "2", "--concurrency", "2"],
        *["--workloads", FLOW_YAML],
    ]


def test_serve_killed_and_started_again_resumes_the_workflow_job(
    tmp_path: Path, flow_dirs: tuple[Path, Path]
) -> None:
    log_dir, gate = flow_dirs
    db = tmp_path / "jobs.sqlite"
    with (
        server_process(*serve_args(db), log=tmp_path / "first.log") as first,
        httpx.Client(base_url=first.wait_for_url(), timeout=10) as client,
        JobStore(db) as store,
    ):
        body = {"workload": WORKFLOW, "input": flow_input(log_dir, gate)}
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        victim = first.proc.pid
        wait_until(
            lambda: holder_while_c_waits(store, job_id, log_dir) == victim,
            "node c to be running",
            15,
        )
        nodes = client.get(f"/v1/jobs/{job_id}/nodes").json()["nodes"]
        assert [n["node"] for n in nodes] in (list("abcd"), list("bacd"))
        assert [n["status"] for n in nodes[2:]] in (["running", "pending"], ["pending", "pending"])
        first.kill9()
        at_kill = {n.node: n.status for n in store.workflow_nodes(job_id)}
    gate.unlink()
    with (
        server_process(*serve_args(db), log=tmp_path / "second.log") as second,
        httpx.Client(base_url=second.wait_for_url(), timeout=10) as client,
        JobStore(db) as store,
    ):
        wait_until(lambda: finished(store, job_id), "the restarted server to finish the job", 30)
        assert_resumed_after_the_kill(store, job_id, log_dir, at_kill, victim)
        r = client.get(f"/v1/jobs/{job_id}/nodes")
        assert r.status_code == 200, r.text
        shown = {n["node"]: (n["status"], n["job_attempt"]) for n in r.json()["nodes"]}
        assert shown == {
            "a": ("succeeded", 1),
            "b": ("succeeded", 1),
            "c": ("succeeded", 2),
            "d": ("succeeded", 2),
        }
        page = client.get(f"/jobs/{job_id}")
        assert page.status_code == 200
        assert 'id="workflow-graph"' in page.text
