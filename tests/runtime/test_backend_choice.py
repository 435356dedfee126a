"""Choosing the backend: names, the environment, and a clear error when Ray is missing."""

from __future__ import annotations

import sys

import pytest

import ambidex as ax


@ax.cpu
def double(x: int) -> int:
    return 2 * x


def test_unknown_backends_and_stray_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown backend 'dask': expected 'local' or 'ray'"):
        ax.Runtime(backend="dask")
    with pytest.raises(ValueError, match="address= is for backend='ray'"):
        ax.Runtime(address="ray://head:10001")


def test_the_environment_chooses_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBIDEX_BACKEND", "ray")
    monkeypatch.setenv("AMBIDEX_RAY_ADDRESS", "ray://head:10001")
    rt = ax.Runtime()
    try:
        assert rt.backend == "ray"
        assert rt.address == "ray://head:10001"
    finally:
        rt.close()


def test_without_ray_the_first_cpu_call_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with (
        ax.Runtime(backend="ray", cpu_workers=1),
        pytest.raises(ax.AmbidexError, match=r"pip install 'ambidex\[ray\]'"),
    ):
        double(2)
    with ax.Runtime(cpu_workers=1):
        assert double(2) == 4  # the local backend never needs it
