"""The model's generator in numba kernels: the same draws as numpy's, typed and unboxed cheaply."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core import types

import ambidex.sim as sim
from ambidex.sim.kernels import KernelGenerator, below, permutation, shuffle

ROOT = Path(__file__).resolve().parents[2]

# MetricsTable.digest() of the shipped models, recorded on main before the model's
# generator became a KernelGenerator and the models' helpers moved to ambidex.sim.kernels.
DIGESTS = {
    ("boltzmann", 0): "e9dff1df21ffa95b032e2b1b3c4c43cc36b74501d1bf3f1785aaca494c12988b",
    ("boltzmann", 42): "00d1267b0d61b1692f599caab2978e04bede9968cfe826c437fe7f701c84ab15",
    ("schelling", 1): "fcd21ad13d9393a92628a6ad8ab9ffa448c6af3eaf4fa2d8e6aa9dfa7172debc",
    ("schelling", 12345): "4fce20a74d23bc1f856cab42cd4d68915d28fc7c4147386ae8b53e131905fccd",
    ("forager", 0): "196d09b32752a3faa72680e1c973c6bea73ebc3c7b1dc600c33ced84ae2a9b1f",
    ("forager", 42): "e7935375205586f9eb6f82c3e90d9691b006219f10f823ff42eb81552a3f897b",
    ("wolf_sheep", 0): "030ab4b066ab1a72c4b61dc83e77983a8781ec517e53cd68f027669a9bf02168",
    ("wolf_sheep", 42): "2eab98361a56cbeb5cb7229cec02e15e311ef7085d444cfeafece0d73ff17f3d",
}
CASES = {
    "boltzmann": ("Boltzmann", {"n": 500, "width": 20, "height": 20}, 30),
    "schelling": ("Schelling", {"width": 20, "height": 20}, 30),
    "wolf_sheep": (
        "WolfSheep",
        {"width": 20, "height": 20, "initial_sheep": 100, "initial_wolves": 50},
        50,
    ),
    "forager": ("Forager", {}, 20),
}


@numba.njit
def _draws(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty(3 * n)
    for i in range(n):
        out[3 * i] = rng.random()
        out[3 * i + 1] = rng.integers(0, 1000)
        out[3 * i + 2] = rng.normal()
    return out


@numba.njit
def _same(rng: np.random.Generator) -> np.random.Generator:
    return rng


def _pair(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    plain = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    return plain, sim.Model(seed=np.random.SeedSequence(seed)).rng


def test_model_rng_is_a_numpy_generator_with_the_seeds_draws() -> None:
    plain, rng = _pair(7)
    assert isinstance(rng, KernelGenerator)
    assert isinstance(rng, np.random.Generator)
    assert rng.random(5).tolist() == plain.random(5).tolist()
    assert rng.integers(0, 10**9, 5).tolist() == plain.integers(0, 10**9, 5).tolist()


def test_kernel_draws_match_a_plain_generator_and_continue_its_stream() -> None:
    plain, rng = _pair(11)
    assert numba.typeof(rng) != numba.typeof(plain)
    assert isinstance(numba.typeof(rng), types.NumPyRandomGeneratorType)
    assert _draws(rng, 50).tobytes() == _draws(plain, 50).tobytes()
    # The kernel advanced the generator's own state: numpy goes on where it stopped.
    assert rng.random(3).tolist() == plain.random(3).tolist()
    assert _draws(rng, 5).tobytes() == _draws(plain, 5).tobytes()


def test_kernel_hands_the_generator_back_as_the_same_object() -> None:
    _, rng = _pair(3)
    assert _same(rng) is rng
    refs = sys.getrefcount(rng)
    for _ in range(1000):
        _draws(rng, 1)
    assert sys.getrefcount(rng) == refs


def test_model_rng_pickles_as_a_kernel_generator_in_the_same_state() -> None:
    _, rng = _pair(5)
    rng.random(10)
    copy = pickle.loads(pickle.dumps(rng))
    assert type(copy) is KernelGenerator
    assert _draws(copy, 4).tobytes() == _draws(rng, 4).tobytes()


def test_helpers_draw_as_the_models_wrote_them() -> None:
    _, rng = _pair(9)
    plain, _ = _pair(9)
    ks = [below(rng, 7) for _ in range(200)]
    assert set(ks) == set(range(7))
    assert ks == [int(plain.random() * 7) for _ in range(200)]
    with pytest.raises(ValueError, match="k must be at least 1"):
        below(rng, 0)
    assert below(rng, 1) == 0
    order = permutation(100, rng)
    assert sorted(order.tolist()) == list(range(100))
    values = np.arange(10, 20)
    assert shuffle(values, rng) is values
    assert sorted(values.tolist()) == list(range(10, 20))


@pytest.mark.parametrize(("model", "seed"), sorted(DIGESTS))
def test_shipped_models_keep_their_digests(model: str, seed: int) -> None:
    cls_name, params, steps = CASES[model]
    result = sim.run(f"{ROOT}/examples/sim/{model}.py:{cls_name}", params, steps=steps, seed=seed)
    assert result.metrics.digest() == DIGESTS[model, seed]


def test_numpy_only_models_do_not_import_numba_and_a_later_kernel_is_taught() -> None:
    code = (
        "import sys, numpy as np, ambidex.sim as sim\n"
        "m = sim.Model(seed=3)\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
        "first = m.rng.random()\n"
        "import numba\n"
        "@numba.njit\n"
        "def draw(rng):\n"
        "    return rng.random()\n"
        "late = draw(m.rng)\n"  # numba came after the model: the first call teaches it
        "assert 'ambidex.sim.kernels' in sys.modules\n"
        "assert numba.typeof(m.rng).name == 'KernelGenerator'\n"
        "assert [t.name for t in draw.signatures[0]] == ['KernelGenerator']\n"
        "plain = np.random.Generator(np.random.PCG64(np.random.SeedSequence(3)))\n"
        "assert [first, late, draw(m.rng)] == plain.random(3).tolist()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
