"""Scaling-law fits of a ladder's (N, D, loss) points: L(N, D) = E + A/N^alpha + B/D^beta per precision (the form of
Hoffmann et al. 2022, "Chinchilla", approach 3), the ternary-to-full-precision gap, and bootstrap intervals.

The fit minimises the squared relative error sum(((L_fit - L) / L)^2) (close to the log-space error Chinchilla
uses, without its Huber loss: a ladder has a dozen points per precision, no outliers to discount). Given the two
exponents the law is linear in (E, A, B), so the fit is a search over (alpha, beta) only (variable projection): a
grid over [0.02, 2] x [0.02, 2], zoomed in four times around the best cell, with a non-negative least-squares
solve for (E, A, B) at each grid point. That finds the global optimum on the grid deterministically, where a
gradient fit from a few starts can stop in a local one; with 12 points for 5 parameters that matters.

Intervals are a residual bootstrap: each replicate adds the fit's relative residuals, resampled with replacement
(centred, and scaled by sqrt(n / (n - 5)) for the 5 fitted parameters), to the fitted losses, refits, and draws one
more residual for the new run whose loss is predicted. So an interval is a prediction interval for one run's
final loss (the fit's uncertainty plus one run's scatter about the law), which is what a held-out run is compared
with. A case bootstrap (resampling points) was not used: a dozen points resampled often drop a whole size or budget
and leave an exponent unidentified. The gap's interval pairs the two precisions' independent replicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bitcpm.windtunnel.lr_curves import Estimate

EXPONENT_RANGE = (0.02, 2.0)
"""Where the exponents are searched; an exponent at either end is reported (the points do not pin it)."""
GRID = 24
"""Grid points per exponent in the first search."""
ZOOMS = 4
"""Refinements of the grid around the best cell (each 9 x 9 points over the neighbouring cells)."""
BOOTSTRAP = 1000
"""Bootstrap replicates behind every interval."""
PARAMETERS = 5
"""E, A, alpha, B, beta: a fit needs more points than this."""
_SUPPORTS = ((0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (1,), (2,))


@dataclass(frozen=True)
class Point:
    """One finished ladder run: its parameters, its training tokens and its final validation loss."""

    n: float
    d: float
    loss: float


@dataclass(frozen=True)
class Law:
    """L(N, D) = e + a / N^alpha + b / D^beta."""

    e: float
    a: float
    alpha: float
    b: float
    beta: float

    def __call__(self, n, d):
        """The predicted loss at N parameters and D tokens (numbers or numpy arrays)."""
        return self.e + self.a * np.power(n, -self.alpha) + self.b * np.power(d, -self.beta)

    def text(self) -> str:
        """The law in one line."""
        return f"L(N, D) = {self.e:.4g} + {self.a:.4g} / N^{self.alpha:.3f} + {self.b:.4g} / D^{self.beta:.3f}"

    def at_edge(self) -> list[str]:
        """The exponents that ended at an end of the searched range."""
        lo, hi = EXPONENT_RANGE
        return [name for name, v in (("alpha", self.alpha), ("beta", self.beta)) if v <= lo * 1.01 or v >= hi * 0.99]


@dataclass(frozen=True)
class LawFit:
    """A fitted law with its bootstrap replicates (each a law and the one run's scatter drawn with it)."""

    law: Law
    points: tuple[Point, ...]
    replicates: tuple[Law, ...]
    scatter: np.ndarray
    """Per replicate: the relative deviation of one new run from its law (the prediction interval's noise)."""

    @property
    def rms_residual(self) -> float:
        """Root-mean-square relative residual of the points about the law."""
        return float(np.sqrt(np.mean(_relative_residuals(self.law, self.points) ** 2)))

    def curve(self, n, d) -> np.ndarray:
        """The replicates' laws at (n, d): shape (replicates, *broadcast shape)."""
        return np.stack([r(n, d) for r in self.replicates]) if self.replicates else np.empty((0,))

    def predict(self, n: float, d: float) -> Estimate:
        """The loss of one run at (n, d): the law's value and its 95% prediction interval."""
        value = float(self.law(n, d))
        if not self.replicates:
            return Estimate(value)
        draws = self.curve(n, d) * (1.0 + self.scatter)
        low, high = np.percentile(draws, [2.5, 97.5])
        return Estimate(value, float(low), float(high))

    def draws(self, n: float, d: float) -> np.ndarray:
        """One predicted run's loss per replicate (for intervals of differences)."""
        return self.curve(n, d) * (1.0 + self.scatter)


def _relative_residuals(law: Law, points: tuple[Point, ...] | list[Point]) -> np.ndarray:
    return np.array([p.loss / float(law(p.n, p.d)) - 1.0 for p in points])


def _grid_fit(x: np.ndarray, y: np.ndarray, loss: np.ndarray, alphas: np.ndarray, betas: np.ndarray):
    """Least squares of relative error over every (alpha, beta) pair; x, y: log N and log D, centred.

    Returns (sum of squares, (E, A', B') with A' = A / N0^alpha, B' = B / D0^beta) per pair, inf where no
    non-negative solution exists.
    """
    w = 1.0 / loss
    cols = (
        np.stack(
            [
                np.ones((alphas.size, x.size)),
                np.exp(-alphas[:, None] * x[None, :]),
                np.exp(-betas[:, None] * y[None, :]),
            ],
            axis=-1,
        )
        * w[None, :, None]
    )
    gram = np.einsum("gni,gnj->gij", cols, cols)
    rhs = cols.sum(axis=1)  # the target L * w is 1 everywhere
    best = np.full(alphas.size, np.inf)
    coef = np.zeros((alphas.size, 3))
    for support in _SUPPORTS:
        idx = np.array(support)
        g = gram[:, idx[:, None], idx[None, :]]
        ridge = 1e-12 * np.trace(g, axis1=1, axis2=2)[:, None, None] * np.eye(idx.size)
        c = np.linalg.solve(g + ridge, rhs[:, idx, None])[..., 0]
        full = np.zeros((alphas.size, 3))
        full[:, idx] = c
        sse = ((np.einsum("gni,gi->gn", cols, full) - 1.0) ** 2).sum(axis=1)
        better = np.all(c >= 0, axis=1) & (sse < best)
        best[better], coef[better] = sse[better], full[better]
    return best, coef


def _fit(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> Law:
    """The least-squares law of arrays of points (grid search over the exponents, then zooms)."""
    n0, d0 = math.exp(float(np.mean(np.log(n)))), math.exp(float(np.mean(np.log(d))))
    x, y = np.log(n / n0), np.log(d / d0)
    lo, hi = EXPONENT_RANGE
    axis = np.linspace(lo, hi, GRID)
    step = axis[1] - axis[0]
    alphas, betas = (g.ravel() for g in np.meshgrid(axis, axis, indexing="ij"))
    for zoom in range(ZOOMS + 1):
        sse, coef = _grid_fit(x, y, loss, alphas, betas)
        k = int(np.argmin(sse))
        if not np.isfinite(sse[k]):
            raise ValueError("no law with non-negative E, A and B fits these points")
        alpha, beta, (e, a, b) = float(alphas[k]), float(betas[k]), coef[k]
        if zoom == ZOOMS:
            break
        a_axis = np.clip(np.linspace(alpha - step, alpha + step, 9), lo, hi)
        b_axis = np.clip(np.linspace(beta - step, beta + step, 9), lo, hi)
        alphas, betas = (g.ravel() for g in np.meshgrid(a_axis, b_axis, indexing="ij"))
        step /= 4
    return Law(float(e), float(a) * n0**alpha, alpha, float(b) * d0**beta, beta)


def check_points(points: list[Point], what: str) -> None:
    """Enough points, sizes and budgets for a five-parameter law (ValueError naming `what` otherwise)."""
    sizes, budgets = len({p.n for p in points}), len({p.d for p in points})
    if len(points) <= PARAMETERS or sizes < 2 or budgets < 2:
        raise ValueError(
            f"{what}: {len(points)} finished point(s) at {sizes} size(s) and {budgets} token budget(s); the law has "
            f"{PARAMETERS} parameters: at least {PARAMETERS + 1} points over 2 sizes and 2 budgets"
        )
    if any(not (p.loss > 0 and math.isfinite(p.loss)) for p in points):
        raise ValueError(f"{what}: a point has no finite positive loss")


def fit_law(points: list[Point], what: str = "ladder") -> Law:
    """The least-squares law L(N, D) of the points."""
    check_points(points, what)
    n, d, loss = (np.array([getattr(p, k) for p in points], dtype=float) for k in ("n", "d", "loss"))
    return _fit(n, d, loss)


def fit_with_bootstrap(points: list[Point], replicates: int = BOOTSTRAP, seed: int = 0, what: str = "ladder") -> LawFit:
    """The law and `replicates` residual-bootstrap refits (none when replicates=0)."""
    law = fit_law(points, what)
    n, d, loss = (np.array([getattr(p, k) for p in points], dtype=float) for k in ("n", "d", "loss"))
    fitted = law(n, d)
    residuals = loss / fitted - 1.0
    residuals = (residuals - residuals.mean()) * math.sqrt(len(points) / (len(points) - PARAMETERS))
    rng = np.random.default_rng(seed)
    laws = []
    for _ in range(replicates):
        laws.append(_fit(n, d, fitted * (1.0 + rng.choice(residuals, size=len(points)))))
    scatter = rng.choice(residuals, size=replicates)
    return LawFit(law, tuple(points), tuple(laws), scatter)


def gap(ternary: LawFit, full: LawFit, n: float, d: float) -> Estimate:
    """Predicted loss of the ternary run minus the full-precision run at (n, d), with its 95% interval."""
    value = float(ternary.law(n, d) - full.law(n, d))
    if not ternary.replicates or not full.replicates:
        return Estimate(value)
    count = min(len(ternary.replicates), len(full.replicates))
    diff = ternary.draws(n, d)[:count] - full.draws(n, d)[:count]
    low, high = np.percentile(diff, [2.5, 97.5])
    return Estimate(value, float(low), float(high))
