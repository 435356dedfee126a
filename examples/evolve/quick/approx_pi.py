"""A quick evolution target: make ``approx()`` return a number close to pi.

Small enough to evolve in seconds with the offline proposer (it nudges the
numeric literals), which is why the tests use it.

    ambidex evolve examples/evolve/quick/approx_pi.py --iterations 40 --parallel 4
"""

import math

import ambidex as ax


@ax.evolve.target(
    goal="Return a float as close to pi as possible, using arithmetic on literals.",
    metric="score",
    features={"error": (0.0, 1.0, 4)},
)
def approx() -> float:
    return 2.0 + 0.5


def evaluate(approx) -> dict[str, float]:
    """Score: minus the distance to pi (0 is perfect)."""
    value = float(approx())
    if not math.isfinite(value):
        raise ValueError(f"approx() returned {value}")
    return {"score": -abs(value - math.pi), "error": min(abs(value - math.pi), 1.0)}


if __name__ == "__main__":
    print(evaluate(approx))
