"""Mesa's example models, imported so that missing optional extras do not stop them.

Shared by ``benchmarks/sim_vs_mesa.py`` and ``tests/sim/test_mesa_models.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path


def load_mesa() -> types.SimpleNamespace:
    """Mesa's example model classes and its ABMSimulator.

    ``mesa/examples/__init__.py`` imports every example, some of which need extras
    (networkx); when that fails the package is registered without running it, so the
    models import on their own.

    Raises:
        ImportError: Mesa is not installed.
    """
    import mesa

    if "mesa.examples" not in sys.modules:
        try:
            importlib.import_module("mesa.examples")
        except ImportError:
            pkg = types.ModuleType("mesa.examples")
            pkg.__path__ = [str(Path(mesa.__file__).parent / "examples")]
            sys.modules["mesa.examples"] = pkg
    from mesa.examples.advanced.wolf_sheep.model import WolfSheep as MesaWolfSheep
    from mesa.examples.basic.boid_flockers.model import BoidFlockers
    from mesa.examples.basic.boltzmann_wealth_model.model import BoltzmannWealth
    from mesa.examples.basic.schelling.model import Schelling as MesaSchelling
    from mesa.examples.basic.virus_on_network.model import VirusOnNetwork as MesaVirusOnNetwork
    from mesa.experimental.devs import ABMSimulator

    return types.SimpleNamespace(
        BoidFlockers=BoidFlockers,
        BoltzmannWealth=BoltzmannWealth,
        Schelling=MesaSchelling,
        WolfSheep=MesaWolfSheep,
        VirusOnNetwork=MesaVirusOnNetwork,
        ABMSimulator=ABMSimulator,
    )


@contextlib.contextmanager
def fast_erdos_renyi(n: int, above: int = 5000, seed: int | None = None) -> Iterator[None]:
    """While building Mesa's ``VirusOnNetwork`` on more than ``above`` nodes, its graph
    generator ``nx.erdos_renyi_graph`` (all ``n (n - 1) / 2`` pairs tried: ~2 h at 100,000
    nodes) is ``nx.fast_gnp_random_graph`` (the same distribution, ``O(n + E)``).

    Mesa draws that graph from Python's global ``random`` (it passes no seed), so
    its runs differed from one benchmark run to the next and a statistical check
    could pass once and fail the next time; with ``seed``, the global ``random`` is
    seeded first, so a Mesa run depends on its seed alone, as ours does.

    Only the constructor runs under it; Mesa's step is untouched.
    """
    import random

    import networkx as nx

    if seed is not None:
        random.seed(seed)
    slow_gnp = nx.erdos_renyi_graph
    if n > above:
        nx.erdos_renyi_graph = nx.fast_gnp_random_graph
    try:
        yield
    finally:
        nx.erdos_renyi_graph = slow_gnp
