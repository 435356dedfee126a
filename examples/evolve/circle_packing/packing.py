"""Circle packing: 26 circles in the unit square, as large as they can be together.

The evolved function ``pack`` places 26 centres in rows and gives each circle,
in turn, the largest radius the walls and the circles before it allow. What
the offline proposer changes is the layout: how many circles per row, the
margins, the stagger of odd rows; an LLM proposer may rewrite it entirely.
The evaluator checks the geometry strictly (every circle inside the square,
no two overlapping) and scores the sum of the radii.

The naive start below (five even rows, wide margins) scores 2.294; this
family of layouts tops out near 2.48, and the best packings known score
about 2.635.

    ambidex evolve examples/evolve/circle_packing/packing.py --iterations 200 --parallel 8
"""

import math

import ambidex as ax

N_CIRCLES = 26


@ax.evolve.target(
    goal=(
        "Place 26 non-overlapping circles inside the unit square so that the sum of "
        "their radii is as large as possible. pack() returns (x, y, r) per circle."
    ),
    metric="sum_radii",
    features={"min_radius": (0.0, 0.15, 6), "spread": (0.0, 0.1, 5)},
    alternatives=[
        [
            "rows = [5, 5, 6, 5, 5]",
            "rows = [6, 5, 5, 5, 5]",
            "rows = [5, 6, 5, 5, 5]",
            "rows = [5, 5, 5, 5, 6]",
            "rows = [4, 5, 4, 5, 4, 4]",
            "rows = [5, 4, 5, 4, 4, 4]",
        ],
    ],
)
def pack() -> list[tuple[float, float, float]]:
    rows = [5, 5, 6, 5, 5]
    margin_x = 0.13
    margin_y = 0.13
    stagger = 0.0
    centres = []
    for i, count in enumerate(rows):
        y = margin_y + i * (1 - 2 * margin_y) / max(len(rows) - 1, 1)
        shift = stagger if i % 2 else 0.0
        width = 1 - 2 * margin_x - shift
        for j in range(count):
            x = margin_x + shift + j * width / max(count - 1, 1)
            centres.append((x, y))
    # each circle as large as the walls and the circles placed before it allow
    radii: list[float] = []
    for k, (x, y) in enumerate(centres):
        r = min(x, y, 1 - x, 1 - y)
        for m in range(k):
            r = min(r, math.dist(centres[k], centres[m]) - radii[m])
        radii.append(max(r, 0.0))
    return [(x, y, r) for (x, y), r in zip(centres, radii, strict=True)]


def evaluate(pack) -> dict[str, float]:
    """Check the packing; score the sum of radii. An invalid packing raises, naming the fault."""
    circles = [tuple(map(float, c)) for c in pack()]
    if len(circles) != N_CIRCLES:
        raise ValueError(f"expected {N_CIRCLES} circles, got {len(circles)}")
    tol = 1e-9
    for k, (x, y, r) in enumerate(circles):
        if not all(math.isfinite(v) for v in (x, y, r)) or r <= 0:
            raise ValueError(f"circle {k}: ({x}, {y}, {r}) needs finite values and r > 0")
        if x - r < -tol or x + r > 1 + tol or y - r < -tol or y + r > 1 + tol:
            raise ValueError(f"circle {k} at ({x:.4f}, {y:.4f}) r={r:.4f} leaves the square")
    for a in range(N_CIRCLES):
        xa, ya, ra = circles[a]
        for b in range(a + 1, N_CIRCLES):
            xb, yb, rb = circles[b]
            if math.hypot(xa - xb, ya - yb) < ra + rb - tol:
                raise ValueError(f"circles {a} and {b} overlap")
    radii = [r for _, _, r in circles]
    mean = sum(radii) / N_CIRCLES
    return {
        "sum_radii": sum(radii),
        "min_radius": min(radii),
        "spread": math.sqrt(sum((r - mean) ** 2 for r in radii) / N_CIRCLES),
    }


if __name__ == "__main__":
    print(evaluate(pack))
