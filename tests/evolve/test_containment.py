"""Containment that bounds the whole candidate: keyrings, memory of all its processes, files."""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import os
import platform
from collections.abc import Iterator

import pytest
from test_sandbox import MARKER, layers, machine_unharmed, require, src, still_works

from ambidex.evolve import _probe, _sandbox
from ambidex.evolve._sandbox import Sandbox

__all__ = ["layers", "machine_unharmed"]  # fixtures shared with test_sandbox

_ADD_KEY = {"x86_64": 248, "aarch64": 217}
_SESSION_KEYRING = -3


@pytest.fixture
def secret_key() -> Iterator[tuple[int, str]]:
    """A key in this (the coordinator's) session keyring: (its serial, its payload)."""
    number = _ADD_KEY.get(platform.machine())
    if number is None:
        pytest.skip(f"no add_key syscall number known for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    payload = f"coordinator-secret-{os.getpid()}"
    serial = libc.syscall(
        number,
        b"user",
        b"ambidex-test-secret",
        payload.encode(),
        ctypes.c_size_t(len(payload)),
        ctypes.c_int(_SESSION_KEYRING),
    )
    if serial < 0:
        pytest.skip(f"add_key failed here: {os.strerror(ctypes.get_errno())}")
    yield int(serial), payload
    libc.syscall(_probe.KEYCTL[platform.machine()], 21, ctypes.c_long(serial))  # INVALIDATE


def _with_caps(**changes: object) -> _probe.Capabilities:
    caps = _sandbox._capabilities()
    return dataclasses.replace(caps, **changes)  # type: ignore[arg-type]


KEY_THIEF = src(
    """
    import ctypes, platform
    KEYCTL = {"x86_64": 250, "aarch64": 219}[platform.machine()]
    def evaluate():
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        buf = ctypes.create_string_buffer(256)
        n = libc.syscall(KEYCTL, 11, ctypes.c_long(SERIAL), buf, ctypes.c_size_t(256))  # READ
        if n > 0:
            print("STOLEN:" + buf.raw[:n].decode())
        try:
            listed = open("/proc/keys").read()
        except OSError:
            listed = ""
        if "ambidex-test-secret" in listed:
            print("LISTED")
        return {"read": float(n), "errno": float(ctypes.get_errno())}
    """
)


async def test_the_coordinators_keyring_is_out_of_reach(
    layers: dict[str, str], secret_key: tuple[int, str]
) -> None:
    require(layers, "keyring")
    serial, payload = secret_key
    result = await Sandbox(timeout_s=10).evaluate(KEY_THIEF.replace("SERIAL", str(serial)))
    assert result.ok, result
    assert payload not in result.stdout
    assert "STOLEN" not in result.stdout
    assert "LISTED" not in result.stdout
    assert result.metrics["read"] < 0


async def test_without_a_keyring_of_its_own_the_key_would_be_readable(
    layers: dict[str, str], secret_key: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above has teeth: the same theft works when the layer is off."""
    require(layers, "keyring")
    serial, payload = secret_key
    monkeypatch.setattr(_probe, "_CAPS", _with_caps(keyring=False))
    result = await Sandbox(timeout_s=10).evaluate(KEY_THIEF.replace("SERIAL", str(serial)))
    assert "STOLEN:" + payload in result.stdout


FORK_AND_ALLOCATE = src(
    """
    import os, time
    def evaluate():
        children = []
        for _ in range(CHILDREN):
            pid = os.fork()
            if pid == 0:
                block = bytes(range(256)) * (MB * 2**20 // 256)  # resident, not lazily zero
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        return {"children": CHILDREN}
    """
)


def _forker(children: int, mb: int) -> str:
    return FORK_AND_ALLOCATE.replace("CHILDREN", str(children)).replace("MB", str(mb))


@pytest.mark.parametrize("how", ["cgroup", "watch"])
async def test_memory_is_bounded_for_the_whole_candidate(
    how: str, layers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight children of 100 MB each: 800 MB against a limit of 300 MB for all of them."""
    if how == "cgroup":
        if "memory cgroup" not in layers["memory"]:
            pytest.skip(f"memory: {layers['memory']}")
    else:
        monkeypatch.setattr(_probe, "_CAPS", _with_caps(memory_cgroup=None))
    box = Sandbox(timeout_s=20, memory_mb=300, max_processes=32)
    result = await box.evaluate(_forker(8, 100))
    assert result.kind == "memory", result
    assert result.error is not None
    assert result.error.startswith("memory limit (300 MB, the whole candidate)")
    assert result.elapsed_s < 10  # killed at the limit, not at the timeout
    await still_works(box)


async def test_the_same_children_within_the_limit_are_fine() -> None:
    result = await Sandbox(timeout_s=20, memory_mb=600).evaluate(
        _forker(2, 50).replace("5)", "0.2)")
    )
    assert result.ok, result


async def test_open_files_are_limited(layers: dict[str, str]) -> None:
    require(layers, "rlimits")
    code = src(
        """
        import resource
        def evaluate():
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            files = []
            try:
                for _ in range(1000):
                    files.append(open("/dev/null"))
            except OSError as exc:
                print("refused:", exc.errno)
            return {"soft": soft, "hard": hard, "opened": len(files)}
        """
    )
    result = await Sandbox(timeout_s=10).evaluate(code)
    assert result.ok, result
    assert (result.metrics["soft"], result.metrics["hard"]) == (256, 256)
    assert result.metrics["opened"] < 256
    assert "refused: 24" in result.stdout  # EMFILE


def test_no_memory_cgroup_is_left_behind() -> None:
    assert glob.glob(f"/sys/fs/cgroup/memory/**/{MARKER}*", recursive=True) == []
