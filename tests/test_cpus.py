"""CPU detection: affinity mask, cgroup quotas, environment overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ambidex as ax
from ambidex.runtime import _cpus


def test_usable_cpus_follows_the_affinity_mask() -> None:
    assert ax.usable_cpus() <= len(os.sched_getaffinity(0))
    assert ax.usable_cpus() >= 1


def test_cgroup_v2_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cpus.cgroup_cpu_quota(tmp_path) == 1.5


def test_cgroup_v2_without_quota_is_none(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cpus.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cpus.cgroup_cpu_quota(tmp_path) == 0.5


def test_quota_caps_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cpus, "_affinity_cpus", lambda: 64)
    monkeypatch.setattr(_cpus, "cgroup_cpu_quota", lambda: 1.5)
    assert _cpus.usable_cpus() == 2


def test_env_overrides_pool_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBIDEX_IO_THREADS", "3")
    monkeypatch.setenv("AMBIDEX_CPU_WORKERS", "5")
    rt = ax.Runtime()
    assert (rt.io_threads, rt.cpu_workers) == (3, 5)
    rt.close()


def test_arguments_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMBIDEX_CPU_WORKERS", "5")
    rt = ax.Runtime(cpu_workers=1, io_threads=2)
    assert (rt.io_threads, rt.cpu_workers) == (2, 1)
    rt.close()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AMBIDEX_IO_THREADS", value)
    with pytest.raises(ValueError, match="AMBIDEX_IO_THREADS"):
        ax.Runtime()


def test_bad_argument_is_rejected() -> None:
    with pytest.raises(ValueError, match="cpu_workers must be a positive integer"):
        ax.Runtime(cpu_workers=0)
