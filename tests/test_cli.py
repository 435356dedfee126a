"""The ``ambidex`` command, run as a real subprocess like a user would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambidex", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_demo_reports_each_kind_on_its_executor() -> None:
    proc = _run("demo", "--json", "--scale", "0.2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = {row["kind"]: row for row in report["rows"]}
    assert set(rows) == {"io", "blocking", "cpu"}
    assert rows["io"]["ran_on"] == ["ambidex-loop"]
    assert all(name.startswith("ambidex-io-") for name in rows["blocking"]["ran_on"])
    assert all(place.startswith("pid ") for place in rows["cpu"]["ran_on"])
    assert str(os.getpid()) not in " ".join(rows["cpu"]["ran_on"])
    # io calls overlap: 100 calls of 0.2 s finish in far less than 20 s
    assert rows["io"]["wall_s"] < rows["io"]["busy_s"] / 10
    stats = report["statistics"]
    assert stats["kinds"]["io"]["calls"] == rows["io"]["calls"]
    assert stats["kinds"]["cpu"]["failed"] == 0


def test_demo_prints_a_table_for_people() -> None:
    proc = _run("demo", "--scale", "0.1", env={"COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    assert "what ran where" in proc.stdout
    for kind in ("io", "blocking", "cpu"):
        assert kind in proc.stdout


def test_info_honours_pool_size_overrides() -> None:
    proc = _run(
        "info", env={"AMBIDEX_IO_THREADS": "5", "AMBIDEX_CPU_WORKERS": "3", "COLUMNS": "120"}
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"│ I/O threads \(AMBIDEX_IO_THREADS\) +│ 5 ", proc.stdout), proc.stdout
    assert re.search(r"│ cpu workers \(AMBIDEX_CPU_WORKERS\) +│ 3 ", proc.stdout), proc.stdout


def test_info_rejects_a_malformed_override_clearly() -> None:
    proc = _run("info", env={"AMBIDEX_CPU_WORKERS": "lots"})
    assert proc.returncode != 0
    assert "AMBIDEX_CPU_WORKERS='lots': expected a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr


@contextlib.contextmanager
def _serving(tmp_path: Path, *args: str) -> Iterator[str]:
    """``python -m ambidex serve --port 0 <args>`` with a fresh AMBIDEX_HOME; yields its URL."""
    env = {**os.environ, "AMBIDEX_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ambidex", "serve", "--port", "0", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            log.seek(0)
            found = re.search(r"ambidex job service on (http://\S+)", log.read())
            url = found.group(1) if found else None
            time.sleep(0.05)
        log.seek(0)
        assert url, f"serve did not start:\n{log.read()}"
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        log.close()


def test_serve_on_its_embedded_defaults_runs_jobs_and_keeps_them(tmp_path: Path) -> None:
    """The README's main job: ``python -m ambidex serve`` with nothing but a home directory."""
    with _serving(tmp_path) as url:
        answer = httpx.post(f"{url}/v1/run/echo", json={"value": {"hello": 1}}, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["status"] == "succeeded"
        assert answer.json()["result"] == {"hello": 1}
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200
        assert "echo" in page.text
    assert (tmp_path / "home" / "jobs.sqlite").exists()


def test_serve_runs_cpu_workloads_of_a_python_file_in_worker_processes(tmp_path: Path) -> None:
    jobs_file = tmp_path / "my_cpu_jobs.py"
    jobs_file.write_text(
        "import os\n"
        "import ambidex as ax\n\n"
        "@ax.jobs.workload\n"
        "@ax.cpu\n"
        "def square(n: int) -> dict:\n"
        "    return {'square': n * n, 'pid': os.getpid()}\n"
    )
    with _serving(tmp_path, "--workloads", str(jobs_file)) as url:
        answer = httpx.post(f"{url}/v1/run/square", json={"n": 7}, timeout=60).json()
        assert answer["status"] == "succeeded", answer["error"]
        assert answer["result"]["square"] == 49
        health = httpx.get(url + "/healthz", timeout=10).json()
    assert answer["result"]["pid"] != int(health["worker"].split(":")[1])  # another process


def test_serve_refuses_a_workload_file_named_like_a_loaded_module(tmp_path: Path) -> None:
    clash = tmp_path / "json.py"
    clash.write_text("")
    proc = _run(
        "serve",
        "--port",
        "0",
        "--workloads",
        str(clash),
        env={"AMBIDEX_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode == 2
    assert "a module named 'json' is already loaded" in proc.stderr
    assert "Traceback" not in proc.stderr
