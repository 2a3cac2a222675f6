"""Sparse one-to-many mappings between two networks (Li et al. 2016, ICLR version §4, Table 2).

Each unit of net B is predicted linearly from *all* units of net A, with an L1 penalty that
makes the mapping sparse. Sweeping the penalty ("decay") shows how many units of A are needed
per unit of B before the prediction error rises: the original found ~4-5 units of Net1 suffice
per conv1 unit of Net2.

How this differs from the original, and why
-------------------------------------------
The original trained a 1×1 convolution "mapping layer" with SGD and L1 weight decay on
standardised activations. SGD never reaches exact zeros, so it counted weights with
``|w| > 0.01``. Here the same convex problem is solved exactly by coordinate descent, which
yields exact zeros; both counts are reported (``nonzero`` and ``nonzero_001``).

The solver works on second moments only (Gram matrices ``XᵀX``, ``XᵀY``, ``YᵀY`` of the
standardised activations): one pass over the activations builds them
(:class:`Moments`, streamable chunk by chunk), and every decay of the grid is then solved and
scored without touching the activations again.

Decay → L1 penalty
------------------
Per target unit ``j`` the solver minimises, on standardised training activations,

    ½·mean_i (y_ij − x_i·w_j)²  +  alpha·‖w_j‖₁ ,      alpha = decay · decay_scale,

which is exactly ``sklearn.linear_model.Lasso(alpha=alpha, fit_intercept=False)`` on the
standardised data (sklearn's ``1/(2n)·‖y − Xw‖²``). With ``decay_scale = n_targets`` (number
of units of net B, the default in :func:`sparse_mapping`) this is the mapping layer's objective

    ½·mean_{i,j} (y_ij − x_i·w_j)²  +  decay·Σ_jk |W_jk|

(Euclidean loss averaged over samples *and* output units, L1 decay on the whole weight
matrix, whose SGD gradient is ``decay·sign(W)``), divided by ``n_targets``. That reading is the
one consistent with the original's reported numbers (conv1, 96 units: decay 1e-2 leaves 0.1
weights per unit at loss 0.491, i.e. alpha ≈ 0.96 is just below the best single-unit
correlations and the loss is that of the all-zero prediction, ½). With ``decay_scale = 1`` the
decay is sklearn's alpha directly.

Loss reported
-------------
``loss`` is the validation Euclidean loss ``½·mean (y − ŷ)²`` of standardised activations
(targets standardised with the *training* mean/std), averaged over units: the original's
normalisation, under which predicting 0 scores ½ and a perfect mapping 0. ``mse`` = 2·loss is
the fraction of variance left unexplained (1 − R²).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((2000, 5)); y = x[:, [0]] * 0.8 + 0.1 * rng.standard_normal((2000, 1))
>>> val = np.zeros(2000, bool); val[::5] = True
>>> table = sparse_mapping(Moments.of(x[~val], y[~val]), Moments.of(x[val], y[val]),
...                        decays=[0.0, 0.1], decay_scale=1.0)
>>> table["nonzero"].tolist()
[5.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg

from convergent.progress import progress_callback


@dataclass
class Moments:
    """Raw first and second moments of paired samples ``x`` (net A) and ``y`` (net B).

    Sums, not means, so chunks add up exactly: ``Moments.of(x1, y1) + Moments.of(x2, y2)``
    equals ``Moments.of(vstack(x1, x2), vstack(y1, y2))``; accumulated in float64. The sums are
    of ``x − shift_x`` and ``y − shift_y``: with a shift near the means (say, the first chunk's)
    centring later does not cancel catastrophically when means dwarf the spread.
    """

    n: int
    sum_x: np.ndarray
    sum_y: np.ndarray
    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray
    shift_x: np.ndarray | float = 0.0
    shift_y: np.ndarray | float = 0.0

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, shift_x=0.0, shift_y=0.0) -> "Moments":
        x = np.asarray(x, dtype=np.float64) - shift_x
        y = np.asarray(y, dtype=np.float64) - shift_y
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have paired rows, got {x.shape[0]} and {y.shape[0]}")
        return cls(x.shape[0], x.sum(0), y.sum(0), x.T @ x, x.T @ y, y.T @ y, shift_x, shift_y)

    def __add__(self, other: "Moments") -> "Moments":
        if not (np.array_equal(self.shift_x, other.shift_x) and np.array_equal(self.shift_y, other.shift_y)):
            raise ValueError("cannot add moments taken around different shifts")
        return Moments(self.n + other.n, self.sum_x + other.sum_x, self.sum_y + other.sum_y,
                       self.xx + other.xx, self.xy + other.xy, self.yy + other.yy,
                       self.shift_x, self.shift_y)

    @property
    def mean_x(self) -> np.ndarray:
        return self.shift_x + self.sum_x / self.n

    @property
    def mean_y(self) -> np.ndarray:
        return self.shift_y + self.sum_y / self.n

    def std(self) -> tuple[np.ndarray, np.ndarray]:
        """Population (ddof=0) standard deviations of x's and y's columns."""
        var_x = np.diag(self.xx) / self.n - (self.sum_x / self.n) ** 2
        var_y = np.diag(self.yy) / self.n - (self.sum_y / self.n) ** 2
        return np.sqrt(np.clip(var_x, 0, None)), np.sqrt(np.clip(var_y, 0, None))

    def standardized(self, mean_x, std_x, mean_y, std_y) -> "StandardGram":
        """Second moments (divided by n) of ``(x − mean_x)/std_x`` and ``(y − mean_y)/std_y``.

        The centring/scaling statistics are passed in, so validation moments can be standardised
        with the training split's statistics. Columns with ``std == 0`` become all-zero.
        """
        n = self.n
        mu_x = np.asarray(mean_x, dtype=np.float64) - self.shift_x  # the means in shifted units
        mu_y = np.asarray(mean_y, dtype=np.float64) - self.shift_y

        def centred(cross, s_u, s_v, mu_u, mu_v):
            # Σ (u−μu)(v−μv)ᵀ = Σuvᵀ − s_u μvᵀ − μu s_vᵀ + n μu μvᵀ
            return cross - np.outer(s_u, mu_v) - np.outer(mu_u, s_v) + n * np.outer(mu_u, mu_v)

        inv_x = np.divide(1.0, std_x, out=np.zeros_like(std_x, dtype=float), where=std_x > 0)
        inv_y = np.divide(1.0, std_y, out=np.zeros_like(std_y, dtype=float), where=std_y > 0)
        xx = centred(self.xx, self.sum_x, self.sum_x, mu_x, mu_x) * np.outer(inv_x, inv_x) / n
        xy = centred(self.xy, self.sum_x, self.sum_y, mu_x, mu_y) * np.outer(inv_x, inv_y) / n
        yy = centred(self.yy, self.sum_y, self.sum_y, mu_y, mu_y) * np.outer(inv_y, inv_y) / n
        return StandardGram(xx=(xx + xx.T) / 2, xy=xy, yy_diag=np.diag(yy).copy(), n=n)


@dataclass
class StandardGram:
    """``G = XᵀX/n``, ``C = XᵀY/n`` and ``diag(YᵀY)/n`` of standardised activations."""

    xx: np.ndarray
    xy: np.ndarray
    yy_diag: np.ndarray
    n: int

    def half_mse(self, coef: np.ndarray) -> np.ndarray:
        """Per target, ``½·mean_i (y_ij − x_i·w_j)²`` from the moments alone."""
        sq = self.yy_diag - 2 * np.einsum("pm,pm->m", self.xy, coef) + np.einsum(
            "pm,pm->m", coef, self.xx @ coef)
        return 0.5 * np.clip(sq, 0, None)


@dataclass
class LassoResult:
    """Coefficients ``[p, m]`` (column j maps A → unit j of B), final duality gap per target."""

    coef: np.ndarray
    gap: np.ndarray
    n_iter: int
    converged: bool


def _soft(z: np.ndarray, t: float) -> np.ndarray:
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def _duality_gap(G, C, yy, W, alpha):
    """Lasso duality gap per target, in Gram form (sklearn's `enet_coordinate_descent_gram`
    criterion with everything divided by n)."""
    Q = C - G @ W  # Xᵀr/n
    r_norm2 = np.clip(yy - 2 * np.einsum("pm,pm->m", C, W) + np.einsum("pm,pm->m", W, G @ W), 0, None)
    ry = yy - np.einsum("pm,pm->m", C, W)  # rᵀy/n
    dual_norm = np.abs(Q).max(axis=0) if Q.shape[0] else np.zeros(W.shape[1])
    scaled = dual_norm > alpha  # rescale the residual into the dual feasible set
    const = np.where(scaled, alpha / np.where(scaled, dual_norm, 1.0), 1.0)
    gap = np.where(scaled, 0.5 * r_norm2 * (1 + const**2), r_norm2)
    return gap + alpha * np.abs(W).sum(0) - const * ry, Q


def _objective(G, c, w, alpha) -> float:
    return 0.5 * w @ G @ w - c @ w + alpha * np.abs(w).sum()


def _feature_sign(G, c, w, alpha, max_steps: int) -> np.ndarray:
    """Finish one target's Lasso exactly by feature-sign search (Lee et al., NIPS 2007).

    Coordinate descent finds the support in a few sweeps but then crawls towards the values
    when units are correlated (small decays, ill-conditioned G). Feature-sign search solves the
    problem restricted to a support and sign pattern in closed form, ``w_S = G_SS⁻¹ (c_S −
    alpha·θ_S)``, line-searches towards it (dropping coordinates that cross zero) and adds the
    coordinate that most violates optimality; the objective falls at every step and the search
    ends at the exact optimum. Started from the coordinate-descent iterate it needs few steps.
    """
    w = w.copy()
    p = len(w)
    signs = np.sign(w)
    for _ in range(max_steps):
        grad = c - G @ w  # minus the smooth part's gradient
        zero = signs == 0
        viol = np.where(zero, np.abs(grad) - alpha, 0.0)
        nonzero_opt = np.abs(grad[~zero] - alpha * signs[~zero]).max(initial=0.0)
        if nonzero_opt <= 1e-12 * max(1.0, alpha):
            j = int(np.argmax(viol))
            if viol[j] <= 0:
                return w  # optimal: active coordinates stationary, the rest within alpha
            signs[j] = np.sign(grad[j])
        S = np.flatnonzero(signs)
        target = np.zeros(p)
        rhs = c[S] - alpha * signs[S]
        try:
            factor = scipy.linalg.cho_factor(G[np.ix_(S, S)])
        except np.linalg.LinAlgError:
            return w
        pivots = np.abs(np.diag(factor[0]))
        if pivots.min() ** 2 < 1e-10 * pivots.max() ** 2:  # more units than the data pin down
            return w
        target[S] = scipy.linalg.cho_solve(factor, rhs)
        # candidates: the target and every point on the way where a coordinate crosses zero;
        # f(w + t·d) = a·t² + b·t + f(w)'s smooth part + alpha·|w + t·d|₁
        d = target - w
        crossing = (w != 0) & (w * target < 0)
        t = np.where(crossing, -w / np.where(crossing, d, 1.0), np.inf)
        ts = np.unique(np.concatenate([t[(t > 0) & (t < 1)], [1.0]]))
        Gd = G @ d
        a, b = 0.5 * d @ Gd, w @ Gd - c @ d
        l1 = np.abs(w[None, :] + ts[:, None] * d[None, :]).sum(1)
        values = a * ts**2 + b * ts + alpha * l1
        best = int(np.argmin(values))
        if values[best] > alpha * np.abs(w).sum():
            return w  # no descent (singular G_SS): leave the rest to coordinate descent
        w = w + ts[best] * d
        w[np.isclose(t, ts[best], rtol=0, atol=1e-15)] = 0.0  # crossed zero here: exactly zero
        signs = np.sign(w)
    return w


def lasso_gram(G: np.ndarray, C: np.ndarray, alpha: float, yy: np.ndarray | None = None,
               coef: np.ndarray | None = None, tol: float = 1e-10, max_iter: int = 10_000,
               check_every: int = 3, polish: bool = True, progress=None) -> LassoResult:
    """Lasso for many targets at once from Gram matrices, by cyclic coordinate descent.

    Minimises, for every column j, ``½ wᵀGw − C[:, j]ᵀw + alpha‖w‖₁``, which with
    ``G = XᵀX/n``, ``C = XᵀY/n`` equals ``sklearn.linear_model.Lasso(alpha, fit_intercept=False)``
    fitted to ``(X, Y[:, j])``. Written by hand because sklearn's Gram solver takes one target at
    a time from raw data; here one coordinate update is a rank-one update of the p×m gradient for
    all targets together, ``coef`` warm-starts a decay path, and converged targets drop out.

    Stops per target when the duality gap is below ``tol·yy_j`` (sklearn's criterion; ``yy`` is
    ``diag(YᵀY)/n``, 1 for standardised targets). ``alpha = 0`` is solved directly (minimum-norm
    least squares), where coordinate descent would crawl on correlated units. For ``alpha > 0``,
    every ``check_every`` sweeps each unfinished target is ``polish``-ed by feature-sign search,
    which finishes it exactly from the support coordinate descent has found. ``progress``: None,
    True (a tqdm bar) or ``callable(done, total)``, counted in targets that have converged.

    >>> import numpy as np
    >>> G = np.eye(3); C = np.array([[0.5], [0.05], [-0.3]])
    >>> lasso_gram(G, C, alpha=0.1).coef.ravel().round(3).tolist()
    [0.4, 0.0, -0.2]
    """
    G = np.asarray(G, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    p, m = C.shape
    yy = np.ones(m) if yy is None else np.asarray(yy, dtype=np.float64)
    if alpha < 0:
        raise ValueError("alpha must be >= 0")
    diag = np.diag(G).copy()
    coords = np.flatnonzero(diag > 0)  # zero-variance (dead) predictors keep weight 0
    if alpha == 0:
        W = np.zeros((p, m))
        W[coords] = np.linalg.lstsq(G[np.ix_(coords, coords)], C[coords], rcond=None)[0]
        # no duality gap without a penalty: report the optimality residual max|G w − c| instead
        if progress is not None:
            progress_callback(progress, "lasso targets", unit="target")(m, m)
        return LassoResult(W, np.abs(G @ W - C).max(axis=0), 0, True)

    report = progress_callback(progress, "lasso targets", unit="target")
    W = np.zeros((p, m)) if coef is None else np.array(coef, dtype=np.float64, copy=True)
    W[diag <= 0] = 0.0
    todo = np.arange(m)
    if report is not None:
        report(0, m)
    gap = np.zeros(m)
    n_iter = 0
    while todo.size and n_iter < max_iter:
        Wt = W[:, todo]
        Qt = C[:, todo] - G @ Wt  # recomputed each round so rank-one updates cannot drift
        for _ in range(check_every):
            for k in coords:
                old = Wt[k].copy()
                new = _soft(Qt[k] + diag[k] * old, alpha) / diag[k]
                delta = new - old
                if np.any(delta):
                    Qt -= np.outer(G[:, k], delta)
                    Wt[k] = new
            n_iter += 1
        W[:, todo] = Wt
        if polish:
            for j in todo:
                w = _feature_sign(G, C[:, j], W[:, j], alpha, max_steps=4 * p)
                if _objective(G, C[:, j], w, alpha) <= _objective(G, C[:, j], W[:, j], alpha):
                    W[:, j] = w  # never worse, whatever round-off did in the search
            Wt = W[:, todo]
        g, _ = _duality_gap(G, C[:, todo], yy[todo], Wt, alpha)
        gap[todo] = g
        todo = todo[g > tol * np.maximum(yy[todo], np.finfo(float).tiny)]
        if report is not None:
            report(m - todo.size if todo.size and n_iter < max_iter else m, m)
    return LassoResult(W, gap, n_iter, todo.size == 0)


def lasso_path_gram(G, C, alphas, yy=None, tol: float = 1e-10, max_iter: int = 10_000,
                    progress=None) -> list[LassoResult]:
    """:func:`lasso_gram` for every alpha, solved from the largest (sparsest, cheapest) down,
    each warm-started from the previous solution; results in the order of ``alphas``.
    ``progress``: None, True (a tqdm bar) or ``callable(done, total)``, counted in (alpha, target)
    fits finished: alphas done × targets + targets converged at the current alpha."""
    alphas = np.asarray(alphas, dtype=np.float64)
    results: list[LassoResult | None] = [None] * len(alphas)
    coef = None
    report = progress_callback(progress, "lasso path", unit="fit")
    m = np.shape(C)[1]
    for step, i in enumerate(np.argsort(-alphas, kind="stable")):
        inner = None if report is None else (
            lambda done, _m, step=step: report(step * m + done, len(alphas) * m))
        res = lasso_gram(G, C, float(alphas[i]), yy=yy, coef=coef, tol=tol, max_iter=max_iter, progress=inner)
        results[i] = res
        coef = res.coef
    return results  # type: ignore[return-value]


def decay_grid(coarse=(0.0, 1e-5, 1e-4, 1e-2, 1e-1), fine_log10=(-3.8, -2.2, 0.2)) -> list[float]:
    """Sorted union of the ``coarse`` decays and ``10**start … 10**stop`` in ``step`` (log10).

    The defaults give Table 2's grid: 0, 1e-5, 1e-4, 10^-3.8 … 10^-2.2 (step 0.2), 1e-2, 1e-1;
    the coarse values are the original Table 2, the fine ones span where the original's conv1
    loss starts to rise (10^-2.6 → 4.1 weights per unit). ``fine_log10=None``: coarse only.

    >>> len(decay_grid()), decay_grid(coarse=[0, 1], fine_log10=None)
    (14, [0.0, 1.0])
    """
    values = {float(d) for d in coarse}
    if fine_log10 is not None:
        start, stop, step = (float(v) for v in fine_log10)
        n = int(np.floor((stop - start) / step + 1e-9)) + 1
        values |= {float(10 ** round(start + i * step, 10)) for i in range(n)}
    if any(d < 0 for d in values):
        raise ValueError("decays must be >= 0")
    return sorted(values)


def split_validation(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows, drawing whole groups (images): positions of one image
    are strongly correlated, so splitting within an image would leak into the score."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    if not 0 < fraction < 1:
        raise ValueError("validation fraction must be in (0, 1)")
    n_val = int(round(fraction * len(uniq)))
    n_val = min(max(n_val, 1), len(uniq) - 1)
    chosen = np.random.default_rng(seed).choice(uniq, size=n_val, replace=False)
    return np.isin(groups, chosen)


def _dead(mean: np.ndarray, std: np.ndarray, rtol: float) -> np.ndarray:
    """Units to leave out: constant ones (a float std of ~1e-16·|mean| is round-off, the rule of
    `convergent.correlation`), and units whose spread is below ``rtol`` of the layer's largest,
    i.e. at the precision of float32 activations. Such a unit fires once, faintly, in training;
    standardising it would scale its validation activations by ~1e12 and wreck the score."""
    return (std <= 1e-10 * np.abs(mean) + 1e-300) | (std <= rtol * std.max(initial=0.0))


def sparse_mapping(train: Moments, val: Moments, decays=None, decay_scale: float | str = "n_targets",
                   threshold: float = 0.01, tol: float = 1e-8, max_iter: int = 10_000,
                   dead_rtol: float = 1e-6, return_coef: bool = False, progress=None):
    """Table 2 for one layer and seed pair: validation loss and weights per unit of B, per decay.

    ``train``/``val``: :class:`Moments` of the two splits. Both are standardised with the
    training split's mean/std. Units of B that are dead in training (zero variance, or below
    ``dead_rtol`` of the net's largest standard deviation) are excluded from the averages; dead
    units of A get weight 0.

    ``decay_scale``: ``"n_targets"`` (alpha = decay × number of units of B, the original's
    normalisation, see module docstring) or a number.

    Returns a DataFrame, one row per decay: ``decay, alpha, loss, mse, train_loss, nonzero``
    (mean exact non-zeros per unit of B), ``nonzero_001`` (mean ``|w| > threshold``),
    ``nonzero_median``, ``max_gap`` (largest duality gap over units of B), ``converged``; with
    ``return_coef`` also the list of ``[p, m]`` coefficient matrices. ``progress``: None, True
    (a tqdm bar) or ``callable(done, total)``, counted in (decay, live unit of B) fits finished.
    """
    decays = decay_grid() if decays is None else [float(d) for d in decays]
    mean_x, mean_y = train.mean_x, train.mean_y
    std_x, std_y = train.std()
    std_x = np.where(_dead(mean_x, std_x, dead_rtol), 0.0, std_x)
    std_y = np.where(_dead(mean_y, std_y, dead_rtol), 0.0, std_y)
    g_train = train.standardized(mean_x, std_x, mean_y, std_y)
    g_val = val.standardized(mean_x, std_x, mean_y, std_y)
    m = g_train.xy.shape[1]
    scale = float(m) if decay_scale == "n_targets" else float(decay_scale)
    live = std_y > 0
    if not live.any():
        raise ValueError("every unit of net B is dead (zero variance) in the training split")
    alphas = [d * scale for d in decays]
    C, yy = g_train.xy[:, live], g_train.yy_diag[live]
    path = lasso_path_gram(g_train.xx, C, alphas, yy=yy, tol=tol, max_iter=max_iter, progress=progress)
    rows, coefs = [], []
    for decay, alpha, res in zip(decays, alphas, path):
        W = np.zeros((g_train.xx.shape[0], m))
        W[:, live] = res.coef
        loss = g_val.half_mse(W)[live]
        nz = (res.coef != 0).sum(0)
        rows.append(dict(
            decay=decay, alpha=alpha, loss=loss.mean(), mse=2 * loss.mean(),
            train_loss=g_train.half_mse(W)[live].mean(), nonzero=nz.mean(),
            nonzero_001=(np.abs(res.coef) > threshold).sum(0).mean(), nonzero_median=float(np.median(nz)),
            max_gap=float(res.gap.max()), converged=res.converged,
        ))
        coefs.append(W)
    table = pd.DataFrame(rows)
    table.attrs.update(n_train=train.n, n_val=val.n, n_targets=int(m), n_dead_targets=int((~live).sum()),
                       n_sources=int(len(std_x)), n_dead_sources=int((std_x == 0).sum()))
    return (table, coefs) if return_coef else table
