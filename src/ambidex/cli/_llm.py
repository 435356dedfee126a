"""``ambidex mock-llm``: serve the mock OpenAI-compatible API in the foreground.

Registered in ``ambidex.cli`` as ``app.command("mock-llm")(mock_llm)``; also
runnable as ``python -m ambidex.cli._llm``.
"""

from __future__ import annotations

import socket
import sys
from typing import Annotated

import typer

from ambidex.cli._errors import fail as _fail
from ambidex.cli._errors import one_line

__all__ = ["mock_llm"]


def _loopback_only(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    from ambidex._urls import is_loopback_host

    if is_loopback_host(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(is_loopback_host(str(info[4][0])) for info in infos)


def mock_llm(
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; only loopback unless --allow-remote is given."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Port to listen on (0: a free one; serve's default is 8000)."
        ),
    ] = 8001,
    latency_ms: Annotated[
        float, typer.Option(min=0.0, help="Least time a request takes, in milliseconds.")
    ] = 0.0,
    jitter_ms: Annotated[
        float,
        typer.Option(min=0.0, help="Extra latency per request, uniform in [0, jitter-ms]."),
    ] = 0.0,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of requests answered HTTP 500.")
    ] = 0.0,
    rate_429: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Fraction of requests answered HTTP 429 with Retry-After."
        ),
    ] = 0.0,
    retry_after_s: Annotated[
        float, typer.Option(min=0.0, help="The Retry-After of those 429s, in seconds.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the random jitter and faults.")] = 0,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow listening on a non-loopback address.")
    ] = False,
) -> None:
    """Serve a mock OpenAI-compatible chat API (for tests and benchmarks).

    POST /v1/chat/completions (streaming too), GET /v1/models, GET /healthz,
    GET /stats, POST /stats/reset. Replies are deterministic (a hash of the
    model and messages); faults and jitter come from --seed. Stop with Ctrl-C.
    """
    if not allow_remote and not _loopback_only(host):
        raise _fail(
            f"--host {host} is not a loopback address; the mock server has no authentication, "
            "so pass --allow-remote to listen there anyway",
            2,
        )
    from ambidex.llm import serve_mock_llm

    listening = False

    def announce(bound: int) -> None:
        nonlocal listening
        listening = True
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"mock-llm serving http://{shown}:{bound}/v1 (latency {latency_ms:g} ms + jitter "
            f"0-{jitter_ms:g} ms, error rate {error_rate:g}, 429 rate {rate_429:g}, "
            f"seed {seed}); Ctrl-C stops it"
        )
        sys.stdout.flush()

    try:
        serve_mock_llm(
            host,
            port,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_rate=error_rate,
            rate_429=rate_429,
            retry_after_s=retry_after_s,
            seed=seed,
            on_listening=announce,
        )
    except ValueError as exc:
        if listening:
            raise
        raise _fail(str(exc), 2) from None
    except OSError as exc:
        if listening:
            raise
        raise _fail(f"cannot listen on {host}:{port}: {one_line(exc)}", 2) from None


if __name__ == "__main__":
    typer.run(mock_llm)
