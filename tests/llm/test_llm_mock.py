"""The mock OpenAI-compatible server: endpoints, statistics, lifecycle, the CLI command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from ambidex.llm import LLM, MockLLMServer
from ambidex.llm._mockapp import MockConfig, mock_reply


def test_endpoints_answer_when_server_runs(server: MockLLMServer) -> None:
    with httpx.Client(base_url=server.url.removesuffix("/v1")) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        models = client.get("/v1/models").json()
        assert models["object"] == "list"
        assert "mock-llm" in [m["id"] for m in models["data"]]
        bad = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert bad.status_code == 400
        assert "messages" in bad.json()["error"]["message"]
        not_json = client.post("/v1/chat/completions", content=b"{nope")
        assert not_json.status_code == 400
        stats = client.get("/stats").json()
        assert stats["requests"] == 2
        assert stats["bad_requests"] == 2
        assert client.post("/stats/reset").json()["requests"] == 0
    assert server.stats().requests == 0


def test_reply_is_derived_from_model_and_messages_when_computed() -> None:
    messages = [{"role": "user", "content": "  echo   these words  "}]
    reply = mock_reply("m", messages)
    assert reply == mock_reply("m", [dict(m) for m in messages])
    assert "you said 'echo these words'" in reply
    assert reply != mock_reply("other", messages)
    long = mock_reply("m", [{"role": "user", "content": " ".join(["w"] * 40)}])
    assert "..." in long
    assert len(long.split()) < 30


def test_latency_is_at_least_the_configured_one_when_jittered() -> None:
    with (
        MockLLMServer(latency_ms=50, jitter_ms=20, seed=2) as server,
        LLM("mock-llm", base_url=server.url) as llm,
    ):
        times = []
        for i in range(4):
            start = time.monotonic()
            llm.chat(f"q{i}")
            times.append(time.monotonic() - start)
    assert min(times) >= 0.05
    assert max(times) < 0.5


def test_server_leaves_no_thread_when_stopped() -> None:
    before = set(threading.enumerate())
    with MockLLMServer() as server:
        httpx.get(server.url + "/models").raise_for_status()
        assert any(t.name.startswith("mock-llm-") for t in threading.enumerate())
    assert set(threading.enumerate()) == before
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


async def test_server_starts_and_stops_without_blocking_when_async() -> None:
    async with MockLLMServer() as server, httpx.AsyncClient() as client:
        response = await client.get(server.url.removesuffix("/v1") + "/healthz")
        assert response.status_code == 200
        name = f"mock-llm-{server.port}"
        assert name in [t.name for t in threading.enumerate()]
    assert name not in [t.name for t in threading.enumerate()]


def test_config_rejects_impossible_rates_when_constructed() -> None:
    with pytest.raises(ValueError, match="error_rate must be between 0 and 1"):
        MockConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        MockConfig(error_rate=0.6, rate_429=0.6)
    with pytest.raises(ValueError, match="latency_ms"):
        MockLLMServer(latency_ms=-1)
    with pytest.raises(ValueError, match="status"):
        MockLLMServer().fail_next(1, status=200)


def _command() -> list[str]:
    """The mock-llm command: ``ambidex mock-llm`` once registered, else its module."""
    from ambidex.cli import app
    from ambidex.cli._llm import mock_llm

    registered = any(c.callback is mock_llm for c in app.registered_commands)
    if registered:
        return [sys.executable, "-m", "ambidex", "mock-llm"]
    return [sys.executable, "-m", "ambidex.cli._llm"]


def test_cli_serves_requests_when_started_as_a_subprocess() -> None:
    proc = subprocess.Popen(
        [*_command(), "--port", "0", "--latency-ms", "5", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        banner = proc.stdout.readline()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+/v1)", banner)
        assert found, (banner, proc.stderr.read() if proc.poll() is not None else "")
        url = found.group(1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(url.removesuffix("/v1") + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with LLM("mock-llm", base_url=url) as llm:
            assert "you said 'over the wire'" in llm.complete("over the wire")
        assert httpx.get(url.removesuffix("/v1") + "/stats").json()["completions"] == 1
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in stderr


def test_cli_refuses_non_loopback_host_when_not_allowed() -> None:
    proc = subprocess.run(
        [*_command(), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr
    assert "--allow-remote" in proc.stderr
    assert "Traceback" not in proc.stderr
