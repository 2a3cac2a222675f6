"""Whole-layer similarity measures between two networks, beside the papers' unit matchings.

Every measure compares two *paired* activation matrices ``X`` ``[n, p]`` and ``Y`` ``[n, q]``:
row ``i`` of both is the response to the same input (the same image, or the same image and
spatial position for conv layers). Columns are units; ``p`` and ``q`` may differ.

Measures, their references, and whether swapping ``X`` and ``Y`` changes the value:

* :func:`linear_cka`: Kornblith et al. 2019, "Similarity of neural network representations
  revisited", eq. (3); ``debiased=True``: the unbiased HSIC estimator of Song et al. 2012.
  Symmetric; invariant to orthogonal transforms and isotropic scaling.
* :func:`rbf_cka`: Kornblith et al. 2019 §3, σ = ``sigma`` × median pairwise distance. Symmetric.
* :func:`cca_mean`: mean canonical correlation (Hotelling 1936; the summary of Raghu et al.
  2017). Symmetric; invariant to invertible linear maps.
* :func:`svcca`: Raghu et al. 2017: PCA keeping 99% of the variance, then CCA. Symmetric.
* :func:`pwcca`: Morcos et al. 2018 §3.1: canonical correlations weighted by how much of ``X``
  each canonical direction accounts for. **Not** symmetric.
* :func:`procrustes_distance`: orthogonal Procrustes distance between centered,
  unit-Frobenius-norm representations (Ding et al. 2021; Williams et al. 2021). Symmetric;
  a distance (0 = same up to rotation and scale).
* :func:`rsa`: Kriegeskorte et al. 2008: Spearman correlation of the correlation-distance RDMs
  over stimuli (rows). Symmetric.
* :func:`matching_correlation`: Li et al. 2016 §3.1: mean correlation of the one-to-one
  (bipartite) matching of units. Symmetric.
* :func:`subspace_similarity`: Wang et al. 2018 §5.1: maximum matching similarity s(ε), by
  :mod:`convergent.subspace` (activation vectors not centered). Symmetric.
* ``soft_matching``: Khosla & Williams 2023, optimal transport between the two sets of units
  (:mod:`convergent.soft_matching`). Symmetric; a distance.
* ``mutual_knn``: Huh et al. 2024, shared k nearest neighbours of the inputs
  (:mod:`convergent.mutual_knn`). Symmetric; needs one row per input.

Linear CKA, CCA, SVCCA, PWCCA, Procrustes and the matching correlation depend on the data only
through the covariance matrices, so each has a ``*_cov(cov_xx, cov_yy, cov_xy)`` form that runs
from streamed statistics (``stats/{layer}.h5``) for any number of samples; the matrix form only
computes the covariances and calls it. These measures are invariant to the covariance
normalisation (1/n or 1/(n-1)), which is why ``n`` is not an argument. RBF CKA, debiased CKA
and RSA need more than second moments (an ``n × n`` kernel, per-row norms, per-image RDMs) and
take matrices; cap their rows for large ``n``.

**Cross-layer convention.** Rows of different conv layers are not paired (different spatial
grids and sampled positions), so comparisons between *different* layers use one row per probe
image: the layer's spatial mean over the whole map (global average pooling, the extractor's
``input_mean``), which is what most CKA papers compare. A cross-layer map uses this convention in
every cell, the diagonal included, so diagonal and off-diagonal are comparable. (Means over a few
*sampled* positions would not do: the positions differ between layers but not between networks,
so on the diagonal both nets would share the same sampling noise and the diagonal would win by
construction.) Same-layer summaries use the layer's native rows (images × positions), as Li et
al. and Wang et al. do; :mod:`convergent.network_similarity` runs both for two activation files.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 5))
>>> Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
>>> round(linear_cka(X, 3 * X @ Q), 6), round(cca_mean(X, X @ rng.normal(size=(5, 5))), 6)
(1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from convergent.matching import bipartite_matching
from convergent.mutual_knn import mutual_knn
from convergent.significance import permute_inputs
from convergent.soft_matching import soft_matching_distance, soft_matching_distance_cov

# Eigenvalues below this fraction of the largest are treated as zero: dead units and exactly
# collinear units make covariance matrices singular, and CCA must whiten only the live subspace.
RANK_RTOL = 1e-10


# --------------------------------------------------------------------------- helpers


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D activation matrix [n_samples, n_units], got shape {x.shape}")
    return x


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_2d(x), _as_2d(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"rows must be paired: {x.shape[0]} rows vs {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("need at least 2 paired rows")
    return x, y


def covariances(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cov_xx, cov_yy, cov_xy)`` of paired matrices, float64, ``ddof=0`` (as in ``stats/*.h5``)."""
    x, y = _paired(x, y)
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    n = x.shape[0]
    return xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n


def _whitener(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues, eigenvectors and ``W = V Λ^{-1/2}`` of the non-null subspace of ``cov``."""
    cov = np.asarray(cov, dtype=np.float64)
    cov = (cov + cov.T) / 2
    vals, vecs = np.linalg.eigh(cov)
    top = vals.max(initial=0.0)
    keep = vals > RANK_RTOL * top if top > 0 else np.zeros_like(vals, dtype=bool)
    vals, vecs = vals[keep], vecs[:, keep]
    return vals, vecs, vecs / np.sqrt(vals)


@dataclass(frozen=True)
class CCA:
    """Canonical correlations ``rho`` (descending) and directions ``a``, ``b`` (columns).

    ``X_c a[:, i]`` and ``Y_c b[:, i]`` are the i-th canonical variates, each of unit variance
    under the covariance the directions were computed from.
    """

    rho: np.ndarray
    a: np.ndarray
    b: np.ndarray


def cca_cov(cov_xx: np.ndarray, cov_yy: np.ndarray, cov_xy: np.ndarray) -> CCA:
    """Canonical correlation analysis from covariances (Hotelling 1936).

    ρ are the singular values of ``Cxx^{-1/2} Cxy Cyy^{-1/2}``, restricted to the non-null
    subspaces (so dead or collinear units do not blow up the inverse); there are
    ``min(rank Cxx, rank Cyy)`` of them. With fewer samples than units every ρ tends to 1:
    read CCA against the permutation null.
    """
    _, _, wx = _whitener(cov_xx)
    _, _, wy = _whitener(cov_yy)
    m = wx.T @ np.asarray(cov_xy, dtype=np.float64) @ wy
    if m.size == 0:
        empty = np.zeros(0)
        return CCA(empty, np.zeros((wx.shape[0], 0)), np.zeros((wy.shape[0], 0)))
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return CCA(np.clip(s, 0.0, 1.0), wx @ u, wy @ vt.T)


# --------------------------------------------------------------------------- CKA


def linear_cka_cov(cov_xx: np.ndarray, cov_yy: np.ndarray, cov_xy: np.ndarray) -> float:
    """Linear CKA = ‖Cxy‖_F² / (‖Cxx‖_F ‖Cyy‖_F) (Kornblith et al. 2019, eq. 3 in feature space)."""
    num = np.sum(np.square(cov_xy))
    den = np.linalg.norm(cov_xx) * np.linalg.norm(cov_yy)
    return float(num / den) if den > 0 else float("nan")


def _debiased_hsic(xty_sq: float, rows_x: np.ndarray, rows_y: np.ndarray, n: int) -> float:
    # Song et al. 2012, eq. 5, rewritten for linear kernels of centered features so that only
    # p × q products and per-row squared norms are needed (as in Kornblith et al.'s code).
    return (xty_sq - n / (n - 2) * rows_x @ rows_y
            + rows_x.sum() * rows_y.sum() / ((n - 1) * (n - 2)))


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA of paired matrices (Kornblith et al. 2019).

    ``debiased=True`` replaces each HSIC by the unbiased estimator of Song et al. 2012
    (Kornblith et al. 2019, appendix), removing the upward bias of CKA for small ``n`` relative
    to the number of units; it needs per-row norms, so it is computed from the matrices
    (``O(n·(p+q)²)``, never an ``n × n`` kernel). Requires ``n > 3``.
    """
    if not debiased:
        return linear_cka_cov(*covariances(x, y))
    x, y = _paired(x, y)
    n = x.shape[0]
    if n <= 3:
        raise ValueError("debiased CKA needs more than 3 rows")
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    rx = np.einsum("ij,ij->i", xc, xc)
    ry = np.einsum("ij,ij->i", yc, yc)
    xy = _debiased_hsic(np.sum(np.square(xc.T @ yc)), rx, ry, n)
    xx = _debiased_hsic(np.sum(np.square(xc.T @ xc)), rx, rx, n)
    yy = _debiased_hsic(np.sum(np.square(yc.T @ yc)), ry, ry, n)
    den = np.sqrt(xx * yy) if xx > 0 and yy > 0 else 0.0
    return float(xy / den) if den > 0 else float("nan")


def rbf_gram(x: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """RBF kernel ``exp(-‖x_i - x_j‖² / (2 σ²))`` with σ = ``sigma`` × median pairwise distance.

    The median runs over distinct pairs (i < j), which is what "median distance between
    examples" in Kornblith et al. 2019 §3 means; their code also counted the zero diagonal.
    """
    x = _as_2d(x)
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    med = np.median(d2[np.triu_indices_from(d2, k=1)])
    if med <= 0:
        return np.ones_like(d2)
    return np.exp(-d2 / (2 * sigma**2 * med))


def cka_gram(k: np.ndarray, l: np.ndarray) -> float:
    """CKA of two kernel matrices: ⟨HKH, HLH⟩_F / (‖HKH‖_F ‖HLH‖_F), H the centering matrix."""
    def center(g):
        g = np.asarray(g, dtype=np.float64)
        return g - g.mean(axis=0) - g.mean(axis=1)[:, None] + g.mean()
    kc, lc = center(k), center(l)
    den = np.linalg.norm(kc) * np.linalg.norm(lc)
    return float(np.sum(kc * lc) / den) if den > 0 else float("nan")


def rbf_cka(x: np.ndarray, y: np.ndarray, sigma: float = 0.8) -> float:
    """RBF-kernel CKA (Kornblith et al. 2019 §3); ``O(n²)`` memory, so subsample rows first."""
    x, y = _paired(x, y)
    return cka_gram(rbf_gram(x, sigma), rbf_gram(y, sigma))


# --------------------------------------------------------------------------- CCA family


def cca_mean_cov(cov_xx, cov_yy, cov_xy) -> float:
    """Mean canonical correlation ρ̄ over the ``min(rank Cxx, rank Cyy)`` canonical pairs."""
    rho = cca_cov(cov_xx, cov_yy, cov_xy).rho
    return float(rho.mean()) if rho.size else float("nan")


def cca_mean(x: np.ndarray, y: np.ndarray) -> float:
    """Mean canonical correlation of paired matrices; invariant to invertible linear maps."""
    return cca_mean_cov(*covariances(x, y))


def _top_variance(cov: np.ndarray, keep: float) -> np.ndarray:
    """Eigenvectors of ``cov`` (columns, descending) explaining a fraction ``keep`` of the variance."""
    vals, vecs, _ = _whitener(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    if vals.size == 0:
        return vecs
    k = int(np.searchsorted(np.cumsum(vals) / vals.sum(), keep - 1e-12)) + 1
    return vecs[:, : min(k, vals.size)]


def svcca_cov(cov_xx, cov_yy, cov_xy, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): project each side on its top principal directions explaining
    ``keep`` of the variance, then the mean canonical correlation of the projections."""
    vx, vy = _top_variance(cov_xx, keep), _top_variance(cov_yy, keep)
    return cca_mean_cov(vx.T @ cov_xx @ vx, vy.T @ cov_yy @ vy, vx.T @ cov_xy @ vy)


def svcca(x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> float:
    """SVCCA of paired matrices (Raghu et al. 2017), keeping 99% of the variance by default."""
    return svcca_cov(*covariances(x, y), keep=keep)


def pwcca_cov(cov_xx, cov_yy, cov_xy) -> float:
    """Projection-weighted CCA (Morcos et al. 2018 §3.1), weights from the ``X`` side.

    ρ̄_PW = Σ α_i ρ_i / Σ α_i with α_i = Σ_j |⟨h_i, x_j⟩|, h_i the i-th canonical variate of X
    (unit norm) and x_j the centered activation vector of X's unit j. As ``⟨X_c a_i, x_j⟩ =
    n (Cxx a_i)_j`` and all variates have the same norm, α_i ∝ Σ_j |(Cxx a_i)_j|.
    Not symmetric: ``pwcca(x, y)`` weights by how much of ``x`` each direction accounts for.

    This is the paper's formula, with h_i the canonical variates ``X_c Cxx^{-1/2} u_i``. The
    authors' reference code (google/svcca ``pwcca.py``) computes something else: it applies the
    whitened-space singular vectors u_i to the *unwhitened* centered activations (``X_c u_i``,
    no ``Cxx^{-1/2}``), orthonormalises those directions with QR, adds the means back and
    weighs against uncentered activations; it also takes the weights from whichever network has
    fewer units. Measured (scratch comparison against that file, same inputs): on the test
    suite's paired ReLU input (``tests/test_similarity.py`` ``_pair``, 120 rows, 8 and 8 units,
    seed 1) this function gives 0.730 and ``pwcca.py`` 0.656 (seed 0: 0.784 vs 0.783); with 5,000
    rows and 64 units, 0.767 vs 0.752; on the default experiment's conv1-conv4 (seeds 0 and 1,
    20,000 rows) 0.866 / 0.831 / 0.791 / 0.737 against 0.876 / 0.852 / 0.817 / 0.773. Values
    are not interchangeable with numbers computed by that code.
    """
    res = cca_cov(cov_xx, cov_yy, cov_xy)
    if res.rho.size == 0:
        return float("nan")
    alpha = np.abs(np.asarray(cov_xx, dtype=np.float64) @ res.a).sum(axis=0)
    return float(alpha @ res.rho / alpha.sum())


def pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Projection-weighted CCA of paired matrices (Morcos et al. 2018), weights from ``x``."""
    return pwcca_cov(*covariances(x, y))


# --------------------------------------------------------------------------- Procrustes, RSA


def procrustes_distance_cov(cov_xx, cov_yy, cov_xy) -> float:
    """Orthogonal Procrustes distance between centered, unit-Frobenius-norm representations.

    min_R ‖X̂ − Ŷ R‖_F over orthogonal R equals ``sqrt(2 − 2 ‖X̂ᵀŶ‖_*)`` (Schönemann 1966),
    and ``‖X̂ᵀŶ‖_* = ‖Cxy‖_* / sqrt(tr Cxx · tr Cyy)``. 0 = identical up to rotation and
    scale, √2 = orthogonal; lower is more similar. Units are zero-padded when p ≠ q.
    """
    den = np.sqrt(np.trace(cov_xx) * np.trace(cov_yy))
    if den <= 0:
        return float("nan")
    nuc = np.linalg.svd(np.asarray(cov_xy, dtype=np.float64), compute_uv=False).sum()
    return float(np.sqrt(max(2.0 - 2.0 * nuc / den, 0.0)))


def procrustes_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Orthogonal Procrustes distance of paired matrices (see :func:`procrustes_distance_cov`)."""
    return procrustes_distance_cov(*covariances(x, y))


def rdm(x: np.ndarray) -> np.ndarray:
    """Representational dissimilarity matrix: ``1 − Pearson r`` between rows (stimuli).

    A row with no variance across units (e.g. all ReLUs silent) has an undefined correlation,
    so its entries are NaN and :func:`rsa_rdm` leaves those pairs out.
    """
    x = _as_2d(x)
    xc = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(xc, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = xc / norm[:, None]
        z[norm == 0] = np.nan
    d = 1.0 - z @ z.T
    np.fill_diagonal(d, 0.0)
    return d


def rsa_rdm(rdm_x: np.ndarray, rdm_y: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of two RDMs, over pairs defined in both."""
    iu = np.triu_indices_from(rdm_x, k=1)
    a, b = rdm_x[iu], rdm_y[iu]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    ra, rb = stats.rankdata(a[ok]), stats.rankdata(b[ok])
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


def _rank_vector(d: np.ndarray) -> np.ndarray | None:
    """Centered, unit-norm ranks of an RDM's upper triangle; None if some entry is undefined."""
    v = d[np.triu_indices_from(d, k=1)]
    if not np.isfinite(v).all():
        return None
    r = stats.rankdata(v)
    r -= r.mean()
    norm = np.linalg.norm(r)
    return r / norm if norm > 0 else None


def rsa_cross(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    """``[len(xs), len(ys)]`` matrix of :func:`rsa` between every ``xs[i]`` and ``ys[j]``.

    All representations must have the same stimuli as rows. Each RDM is built and ranked once,
    so a cross-layer map costs one dot product per cell instead of two sorts.
    """
    rdms_x, rdms_y = [rdm(x) for x in xs], [rdm(y) for y in ys]
    ranks_x, ranks_y = [_rank_vector(d) for d in rdms_x], [_rank_vector(d) for d in rdms_y]
    out = np.empty((len(xs), len(ys)))
    for i, (dx, rx) in enumerate(zip(rdms_x, ranks_x)):
        for j, (dy, ry) in enumerate(zip(rdms_y, ranks_y)):
            # Undefined pairs differ between RDMs, so they need ranks over the common pairs.
            out[i, j] = float(rx @ ry) if rx is not None and ry is not None else rsa_rdm(dx, dy)
    return out


def rsa(x: np.ndarray, y: np.ndarray) -> float:
    """RSA (Kriegeskorte et al. 2008): Spearman ρ between correlation-distance RDMs of the rows.

    Rows must be stimuli (one per image: a conv layer's spatial means,
    :func:`convergent.activations.read_input_means`); ``O(n²)``.
    """
    x, y = _paired(x, y)
    return rsa_rdm(rdm(x), rdm(y))


# --------------------------------------------------------------------------- papers' own summaries


def correlation_from_cov(cov_xx, cov_yy, cov_xy) -> np.ndarray:
    """Between-net unit correlation matrix; rows/columns of dead (zero-variance) units are NaN."""
    sx = np.sqrt(np.clip(np.diag(cov_xx), 0, None))
    sy = np.sqrt(np.clip(np.diag(cov_yy), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.asarray(cov_xy, dtype=np.float64) / np.outer(sx, sy)
    corr[sx == 0, :] = np.nan
    corr[:, sy == 0] = np.nan
    return corr


def matching_correlation_cov(cov_xx, cov_yy, cov_xy) -> float:
    """Mean correlation over the bipartite matching of units (Li et al. 2016 §3.1, Table 1)."""
    value = bipartite_matching(correlation_from_cov(cov_xx, cov_yy, cov_xy)).value
    return float(np.nanmean(value)) if np.isfinite(value).any() else float("nan")


def matching_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Mean bipartite-matching correlation of paired matrices (Li et al. 2016 §3.1)."""
    return matching_correlation_cov(*covariances(x, y))


def subspace_similarity(x: np.ndarray, y: np.ndarray, eps: float = 0.5, device: str = "auto") -> float:
    """Maximum matching similarity s(ε) = (|X*|+|Y*|)/(|X|+|Y|) (Wang et al. 2018 §5.1).

    Delegates to :func:`convergent.subspace.similarity`, which owns Algorithm 1 (activation
    vectors not centered, zero columns dropped). Imported lazily: it pulls in torch. The default
    ε is the config's (``similarity.subspace_eps``; a test keeps the two equal): in the default
    experiment s(ε) is near 0 beyond conv1 for ε <= 0.25 and separates networks at 0.5.
    """
    from convergent import subspace

    return float(subspace.similarity(_as_2d(x), _as_2d(y), eps, device=device))


# --------------------------------------------------------------------------- registry and nulls


@dataclass(frozen=True)
class Measure:
    """A named measure: ``fn(x, y)`` on matrices, ``cov`` on covariances where it exists."""

    name: str
    label: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    cov: Callable[..., float] | None
    higher_is_similar: bool
    symmetric: bool
    reference: str


MEASURES: dict[str, Measure] = {m.name: m for m in [
    Measure("linear_cka", "linear CKA", linear_cka, linear_cka_cov, True, True, "Kornblith et al. 2019"),
    Measure("debiased_cka", "debiased linear CKA", lambda x, y: linear_cka(x, y, debiased=True), None,
            True, True, "Kornblith et al. 2019; Song et al. 2012"),
    Measure("rbf_cka", "RBF CKA", rbf_cka, None, True, True, "Kornblith et al. 2019"),
    Measure("cca", "mean CCA ρ", cca_mean, cca_mean_cov, True, True, "Hotelling 1936"),
    Measure("svcca", "SVCCA (99% var.)", svcca, svcca_cov, True, True, "Raghu et al. 2017"),
    Measure("pwcca", "PWCCA", pwcca, pwcca_cov, True, False, "Morcos et al. 2018"),
    Measure("procrustes", "Procrustes distance", procrustes_distance, procrustes_distance_cov,
            False, True, "Ding et al. 2021; Williams et al. 2021"),
    Measure("rsa", "RSA (Spearman of RDMs)", rsa, None, True, True, "Kriegeskorte et al. 2008"),
    Measure("matching", "mean matching corr.", matching_correlation, matching_correlation_cov,
            True, True, "Li et al. 2016"),
    Measure("subspace", "subspace match s(ε)", subspace_similarity, None, True, True, "Wang et al. 2018"),
    Measure("soft_matching", "soft matching distance", soft_matching_distance, soft_matching_distance_cov,
            False, True, "Khosla & Williams 2023"),
    Measure("mutual_knn", "mutual k-NN", mutual_knn, None, True, True, "Huh et al. 2024"),
]}


def compute(name: str, x: np.ndarray, y: np.ndarray, **kwargs) -> float:
    """Measure ``name`` (a key of :data:`MEASURES`) on paired matrices; kwargs go to the function."""
    if name not in MEASURES:
        raise KeyError(f"unknown measure {name!r}; known: {sorted(MEASURES)}")
    return float(MEASURES[name].fn(x, y, **kwargs))


def permutation_null(fn: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray,
                     n_permutations: int, seed: int = 0, row_input: np.ndarray | None = None) -> np.ndarray:
    """``fn(x, y[π])`` for ``n_permutations`` random permutations π of the probe inputs: the value a
    measure takes when the pairing of inputs is broken but each representation's own structure
    kept. ``row_input``: the probe input of each row, when an input has several (positions of a
    map); its rows then move together (:func:`convergent.significance.permute_inputs`), since
    rows shuffled one by one lose their within-image dependence and the null sits too low."""
    x, y = _paired(x, y)
    rng = np.random.default_rng(seed)
    if row_input is None:
        return np.array([fn(x, y[rng.permutation(y.shape[0])]) for _ in range(n_permutations)])
    return np.array([fn(x, y[permute_inputs(row_input, rng)]) for _ in range(n_permutations)])
