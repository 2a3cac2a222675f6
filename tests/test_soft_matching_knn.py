"""Soft matching distance (Khosla & Williams 2023) and mutual k-NN (Huh et al. 2024) against
independent references: the hard bipartite matching, a brute-force linear program, a plain loop."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, linprog

from convergent import similarity as sim
from convergent.mutual_knn import knn_indices, mutual_knn
from convergent.soft_matching import soft_matching_distance, soft_matching_plan, transport_cost


def _pair(n, p, q, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    x = np.maximum(z @ rng.normal(size=(4, p)) + 0.5 * rng.normal(size=(n, p)), 0)
    y = np.maximum(z @ rng.normal(size=(4, q)) + 0.5 * rng.normal(size=(n, q)), 0)
    return x, y


@pytest.mark.parametrize("seed", range(4))
def test_soft_matching_equals_hard_matching_at_equal_widths(seed):
    """With uniform marginals and p = q, a permutation is optimal (Birkhoff–von Neumann): the
    distance is the one of the best one-to-one matching of units."""
    x, y = _pair(200, 7, 7, seed)
    cost = transport_cost(*sim.covariances(x, y))
    rows, cols = linear_sum_assignment(cost)
    hard = np.sqrt(cost[rows, cols].mean())
    assert soft_matching_distance(x, y) == pytest.approx(hard, abs=1e-9)
    # and the brute force over all 7! permutations agrees with the assignment
    best = min(cost[np.arange(7), list(perm)].mean() for perm in itertools.permutations(range(7)))
    assert hard == pytest.approx(np.sqrt(best), abs=1e-12)


@pytest.mark.parametrize("p, q, seed", [(3, 5, 0), (4, 2, 1), (5, 3, 2), (2, 7, 3)])
def test_soft_matching_equals_a_linear_program(p, q, seed):
    x, y = _pair(150, p, q, seed)
    cov = sim.covariances(x, y)
    cost = transport_cost(*cov)
    # variables T[i, j] row-major; rows sum to 1/p, columns to 1/q, T >= 0
    a_eq = np.vstack([np.kron(np.eye(p), np.ones(q)), np.kron(np.ones(p), np.eye(q))])
    b_eq = np.concatenate([np.full(p, 1 / p), np.full(q, 1 / q)])
    lp = linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert lp.status == 0
    plan, squared = soft_matching_plan(*cov)
    assert squared == pytest.approx(lp.fun, abs=1e-9)
    np.testing.assert_allclose(plan.sum(1), 1 / p, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), 1 / q, atol=1e-12)
    # the cost is ‖x_i − y_j‖² of the centred, scaled tuning curves, written out
    xc, yc = x - x.mean(0), y - y.mean(0)
    xs = xc / np.sqrt((xc**2).sum(0).mean() / len(x))
    ys = yc / np.sqrt((yc**2).sum(0).mean() / len(y))
    direct = ((xs[:, :, None] - ys[:, None, :]) ** 2).mean(0)
    np.testing.assert_allclose(cost, direct, atol=1e-10)


def test_soft_matching_is_a_metric_invariant_to_relabelling_and_scale():
    rng = np.random.default_rng(5)
    x, y = _pair(120, 5, 6, 5)
    z = np.maximum(rng.normal(size=(120, 4)), 0)
    assert soft_matching_distance(x, x[:, rng.permutation(5)] * 2.5 + 1.0) == pytest.approx(0, abs=1e-6)
    assert soft_matching_distance(x, y) == pytest.approx(soft_matching_distance(y, x), abs=1e-12)
    assert soft_matching_distance(x, z) <= soft_matching_distance(x, y) + soft_matching_distance(y, z) + 1e-12
    assert sim.MEASURES["soft_matching"].cov is not None  # runs from streamed statistics


def _knn_loop(x, k):
    """Each row's k most cosine-similar other rows, by a plain loop (ties to the lower index)."""
    n = len(x)
    out = []
    for i in range(n):
        scores = []
        for j in range(n):
            if j == i:
                continue
            nx, ny = np.linalg.norm(x[i]), np.linalg.norm(x[j])
            cos = 0.0 if nx == 0 or ny == 0 else float(x[i] @ x[j] / (nx * ny))
            scores.append((-cos, j))
        out.append([j for _, j in sorted(scores)[:k]])
    return out


@pytest.mark.parametrize("k, seed", [(1, 0), (3, 1), (5, 2)])
def test_mutual_knn_against_a_loop(k, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 4))
    y = x @ rng.normal(size=(4, 6)) + 0.8 * rng.normal(size=(30, 6))
    x[3] = 0  # a zero row: similarity 0 to everything
    nx, ny = _knn_loop(x, k), _knn_loop(y, k)
    assert knn_indices(x, k).tolist() == nx
    expected = np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny)])
    assert mutual_knn(x, y, k) == pytest.approx(expected, abs=1e-12)


def test_mutual_knn_chance_level_and_identity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    assert mutual_knn(x, 3 * x, k=10) == 1.0
    shuffled = [mutual_knn(x, rng.normal(size=(400, 8)), k=10) for _ in range(5)]
    assert np.mean(shuffled) == pytest.approx(10 / 399, abs=0.01)
    with pytest.raises(ValueError, match="k must be"):
        mutual_knn(x[:5], x[:5], k=5)
