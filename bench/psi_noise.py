"""How large is the PSI between two samples of the *same* distribution?

Draws both windows from one distribution (uniform integers 224-640, like image
widths) many times and prints the mean and upper percentiles of the index our
binning gives, next to the (B − 1)(1/n + 1/m) approximation. This is the noise
floor a drift threshold must clear (docs/ARCHITECTURE.md, "Drift").

    python -m bench.psi_noise [--trials 300] [--bins 10]
"""

from __future__ import annotations

import argparse

import numpy as np

from imgclass.ops.drift import continuous_bins, psi


def noise(n: int, bins: int, trials: int, rng: np.random.Generator) -> np.ndarray:
    values = []
    for _ in range(trials):
        reference = rng.integers(224, 641, n).astype(float)
        recent = rng.integers(224, 641, n).astype(float)
        table = continuous_bins(reference, recent, bins)
        values.append(psi([b.reference_share for b in table], [b.recent_share for b in table]))
    return np.array(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--bins", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"| n = m | mean PSI | p90 | p99 | (B-1)(2/n) |  (B = {args.bins}, {args.trials} trials)")
    for n in (100, 240, 500, 1000):
        values = noise(n, args.bins, args.trials, rng)
        p90, p99 = np.percentile(values, [90, 99])
        expected = (args.bins - 1) * 2 / n
        print(f"| {n} | {values.mean():.3f} | {p90:.3f} | {p99:.3f} | {expected:.3f} |")


if __name__ == "__main__":
    main()
