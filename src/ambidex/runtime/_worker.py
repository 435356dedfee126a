"""The cpu worker process: receive a pickled call, run it, send back the outcome.

Started by the process pool as ``python -c <bootstrap>`` with one end of a
socket pair as its only channel, so whatever the user's code prints on stdout
or stderr cannot corrupt the protocol. Frames are an 8-byte big-endian length
followed by a cloudpickle payload. The worker exits when the socket closes,
and (on Linux) when its parent dies.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
from typing import Any

import cloudpickle

from ambidex._text import format_traceback

__all__ = ["FunctionRef", "main"]

_HEADER = struct.Struct(">Q")


class FunctionRef:
    """A decorated module-level function, sent by name instead of by value."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def resolve(self) -> Any:
        import importlib

        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return getattr(obj, "__wrapped__", obj)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FunctionRef, (self.module, self.qualname))


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel kills us when the parent thread exits, so a
    # busy worker never outlives a parent that was SIGKILLed.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _encode_error(exc: BaseException, *shipped: Any) -> bytes:
    # ``shipped``: nothing, or the finished spans of a traced call (one list).
    text = format_traceback(exc)
    try:
        data = bytes(cloudpickle.dumps(("err", exc, text, *shipped)))
        # An exception whose __init__ does not accept its own .args pickles
        # but cannot be rebuilt; find out here rather than in the parent.
        cloudpickle.loads(data)
        return data
    except Exception:
        from ambidex._text import exception_message
        from ambidex.exceptions import RemoteError

        remote = RemoteError(type(exc).__qualname__, exception_message(exc))
        return bytes(cloudpickle.dumps(("err", remote, text, *shipped)))


def _run_one(data: bytes) -> bytes:
    try:
        call = cloudpickle.loads(data)
        traced = len(call) == 4  # (fn, args, kwargs, (name, trace context)): tracing is on
        if traced:
            fn, args, kwargs, context = call
        else:
            fn, args, kwargs = call
        if isinstance(fn, FunctionRef):
            fn = fn.resolve()
    except BaseException as exc:
        from ambidex.exceptions import SerializationError

        err = SerializationError(f"the worker could not unpickle the call: {exc!r}")
        return _encode_error(err)
    if traced:
        return _run_traced(fn, args, kwargs, context)
    return _run_plain(fn, args, kwargs)


def _run_plain(fn: Any, args: Any, kwargs: Any) -> bytes:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        return _encode_error(exc)
    return _encode_result(result)


def _encode_result(result: Any, *shipped: Any) -> bytes:
    # ``shipped``: as for ``_encode_error``.
    try:
        return bytes(cloudpickle.dumps(("ok", result, None, *shipped)))
    except Exception as exc:
        from ambidex.exceptions import SerializationError

        err = SerializationError(
            f"the result ({type(result).__qualname__}) could not be pickled back: {exc!r}"
        )
        return _encode_error(err, *shipped)


def _run_traced(fn: Any, args: Any, kwargs: Any, traced: tuple[str, Any]) -> bytes:
    """``_run_one`` for a call that carries the caller's trace context.

    The call runs inside its worker-side span; the reply carries the spans
    finished here as a fourth item (see ``ambidex.runtime._spans``).
    """
    try:
        from ambidex import _otel
        from ambidex.runtime import _spans
    except ImportError:  # no OpenTelemetry here: run it untraced; the reply ships no spans
        return _run_plain(fn, args, kwargs)
    name, carrier = traced
    failed: BaseException | None = None
    result: Any = None
    with _spans.worker_call(name, carrier) as current:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            failed = exc
            _otel.fail(current, exc)
    shipped = _spans.take_finished()
    if failed is not None:
        return _encode_error(failed, shipped)
    return _encode_result(result, shipped)


def main(fd: int) -> None:
    """Serve calls on socket ``fd`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    _die_with_parent()
    os.environ["AMBIDEX_IN_WORKER"] = "1"
    sock = socket.socket(fileno=fd)
    sock.sendall(_HEADER.pack(0))  # ready: the parent starts deadlines from here
    while True:
        header = _recv_exact(sock, _HEADER.size)
        if header is None:
            return
        data = _recv_exact(sock, _HEADER.unpack(header)[0])
        if data is None:
            return
        out = _run_one(data)
        del data
        sock.sendall(_HEADER.pack(len(out)) + out)
        sys.stdout.flush()
