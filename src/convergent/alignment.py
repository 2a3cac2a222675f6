"""Aligning net B to net A by permuting B's units (Ainsworth et al. 2023, "Git Re-Basin", §3).

Both functions return one permutation per group of a :class:`~convergent.permutation.PermutationSpec`
(``B'[..., i, ...] = B[..., perm[i], ...]``), to apply with
:func:`~convergent.permutation.permute_state`:

* :func:`weight_matching` — Algorithm 1: coordinate descent over the groups, each step a linear
  assignment maximising ``Σ ⟨W_A, W_B'⟩`` over the group's parameters with the other groups held;
* :func:`activation_matching` — per group, the Pearson correlation of A's and B's units over the
  probe inputs (all spatial positions; summed over the group's sites when it has several, such
  as a ResNet stage's residual stream), then Li et al. 2016 §3.1's bipartite matching
  (:func:`convergent.matching.bipartite_matching`). A unit that never varies on the probe
  inputs (a dead ReLU) carries no activation to match; such units are paired among
  themselves by their weights, as weight matching would (with the groups before them already
  aligned), rather than at random.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from convergent.matching import bipartite_matching
from convergent.network_graph import outputs_module, paired_rows, trace
from convergent.permutation import Axis, PermutationSpec, _index, permute_state

_STATISTICS = ("running_mean", "running_var")


def _weight_keys(state: dict) -> set[str]:
    """Parameters: floating-point entries except batch-norm statistics (data, not weights)."""
    return {k for k, v in state.items() if torch.is_floating_point(v) and not k.endswith(_STATISTICS)}


def _unit_rows(w: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """``w`` with the group's units as rows, ``[size, everything else]``; a unit's block of a
    flattened axis (``c·repeat ... c·repeat + repeat − 1``) is contiguous, so a reshape keeps it."""
    return w.movedim(axis, 0).reshape(size, -1)


class _Costs:
    """``C[i, j] = Σ ⟨A's weights of unit i, B's of unit j⟩`` over a group's axes, with B's other
    axes permuted by the other groups' current permutations."""

    def __init__(self, state_a: dict, state_b: dict, spec: PermutationSpec):
        self.a, self.b, self.spec = state_a, state_b, spec
        self.keys = _weight_keys(state_a)
        self.axes_of_key: dict[str, list[tuple[str, Axis]]] = {}
        for name, group in spec.groups.items():
            for ax in group.axes:
                self.axes_of_key.setdefault(ax.key, []).append((name, ax))

    def __call__(self, name: str, perms: dict, known=None) -> np.ndarray:
        """The group's cost; with ``known`` (a set of group names), only parameters whose other
        axes all belong to known groups (or none) count."""
        n = self.spec.groups[name].size
        cost = torch.zeros(n, n, dtype=torch.float64)
        for ax in self.spec.groups[name].axes:
            if ax.key not in self.keys:
                continue
            others = [(g, o) for g, o in self.axes_of_key[ax.key] if o is not ax]
            if known is not None and any(g not in known for g, _ in others):
                continue
            wb = self.b[ax.key]
            for g, o in others:
                wb = wb.index_select(o.axis, torch.as_tensor(_index(perms[g], o.repeat), device=wb.device))
            wa = _unit_rows(self.a[ax.key], ax.axis, n)
            cost += (wa @ _unit_rows(wb, ax.axis, n).T).double().cpu()
        return cost.numpy()


def weight_matching(state_a: dict, state_b: dict, spec: PermutationSpec, max_iter: int = 100,
                    seed: int = 0, init: dict | None = None, log=None) -> tuple[dict, dict]:
    """Git Re-Basin weight matching (Ainsworth et al. 2023, Algorithm 1).

    Maximises ``Σ_ℓ ⟨W_A^ℓ, P_ℓ W_B^ℓ P_{ℓ−1}ᵀ⟩`` over the parameters by coordinate descent:
    groups in a random order each sweep, each solved exactly as a linear assignment with the
    others held, until a sweep improves nothing. Returns ``(perms, info)``; ``info`` has
    ``sweeps``, ``converged`` and ``objective`` (the final ``Σ ⟨W_A, W_B'⟩``).
    """
    costs = _Costs(state_a, state_b, spec)
    rng = np.random.default_rng(seed)
    perms = {k: np.asarray(v) for k, v in (init or spec.identity()).items()}
    names = list(spec.groups)
    converged, sweep = False, 0
    for sweep in range(1, max_iter + 1):
        progress = False
        for i in rng.permutation(len(names)):
            name = names[i]
            cost = costs(name, perms)
            n = len(cost)
            _, col = linear_sum_assignment(cost, maximize=True)
            old, new = cost[np.arange(n), perms[name]].sum(), cost[np.arange(n), col].sum()
            if new > old + 1e-9 * max(1.0, abs(old)):
                progress = True
                perms[name] = col
        if not progress:
            converged = True
            break
    aligned = permute_state(state_b, spec, perms)
    # in sorted order: a set's order changes with each process's hash seed, and with it the last
    # bits of the sum (found by the fault-injection suite: a rerun job wrote another objective)
    objective = float(sum(float((state_a[k].double() * aligned[k].double()).sum()) for k in sorted(costs.keys)))
    if log:
        log(f"weight matching: {sweep} sweep(s), converged {converged}, <W_A, W_B'> = {objective:.6g}")
    return perms, {"sweeps": sweep, "converged": converged, "objective": objective}


@torch.no_grad()
def site_correlations(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec, batches,
                      device="cpu", positions: int | None = None, seed: int = 0,
                      log=None) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    """Per group: the Pearson correlation ``[n, n]`` of A's units (rows) with B's (columns) over
    the inputs of ``batches`` (input tensors) and every spatial position (or ``positions`` random
    ones per input), averaged over the group's sites, and the units dead at every site in A and
    in B (zero variance; their correlations are 0). Accumulated in float64 from sums in one pass."""
    sites = [(name, s) for name, g in spec.groups.items() for s in g.sites]
    missing = [name for name, g in spec.groups.items() if not g.sites]
    if missing:
        raise ValueError(f"groups {missing} have no nonlinearity whose output activation matching could read")
    readers = []
    for model in (model_a, model_b):
        graph = trace(model.to(device).eval())
        by_name = {n.name: n for n in graph.graph.nodes}
        readers.append(outputs_module(graph, [by_name[s] for _, s in sites]))
    sums = [None] * len(sites)
    generator = torch.Generator().manual_seed(seed)
    for i, x in enumerate(batches):
        x = x.to(device)
        for k, (ya, yb) in enumerate(zip(readers[0](x), readers[1](x))):
            ya, yb = paired_rows(ya, yb, positions, generator)
            s = (len(ya), ya.sum(0), yb.sum(0), (ya * ya).sum(0), (yb * yb).sum(0), ya.T @ yb)
            sums[k] = s if sums[k] is None else tuple(p + q for p, q in zip(sums[k], s))
        if log and (i + 1) % 20 == 0:
            log(f"activation matching: {i + 1} batches")
    if sums[0] is None:
        raise ValueError("activation matching needs at least one batch of probe inputs")
    corr: dict[str, np.ndarray] = {}
    live: dict[str, list] = {}
    for (name, _), (n, sa, sb, saa, sbb, sab) in zip(sites, sums):
        ma, mb = sa / n, sb / n
        sda = (saa / n - ma**2).clamp_min(0).sqrt()
        sdb = (sbb / n - mb**2).clamp_min(0).sqrt()
        # float round-off leaves a dead unit's variance at ~1e-16 of its mean: the rule of
        # convergent.correlation for zero variance
        la = (sda > 1e-7 * ma.abs() + 1e-12).cpu().numpy()
        lb = (sdb > 1e-7 * mb.abs() + 1e-12).cpu().numpy()
        denom = torch.outer(torch.where(torch.as_tensor(la), sda.cpu(), 1.0), torch.where(torch.as_tensor(lb), sdb.cpu(), 1.0))
        c = ((sab / n - torch.outer(ma, mb)).cpu() / denom).numpy()
        c[~la, :] = 0.0
        c[:, ~lb] = 0.0
        corr[name] = corr.get(name, 0) + c
        prev = live.get(name, (np.zeros_like(la), np.zeros_like(lb)))
        live[name] = (prev[0] | la, prev[1] | lb)
    counts = {name: sum(1 for g, _ in sites if g == name) for name in corr}
    dead = {name: (~live[name][0], ~live[name][1]) for name in corr}
    return {name: corr[name] / counts[name] for name in corr}, dead


def activation_matching(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec, batches,
                        device="cpu", positions: int | None = None, seed: int = 0, log=None) -> tuple[dict, dict]:
    """Per group, the bipartite matching of A's units to B's by activation correlation (Li et al.
    2016 §3.1; Ainsworth et al. 2023 §3.1); units dead on the probe inputs are then matched among
    themselves by weights, in the groups' graph order so the groups feeding them are aligned.
    Returns ``(perms, info)``: per group the mean matched correlation of live units and the
    numbers of dead units. ``positions``: random spatial positions per input (None: all)."""
    corr, dead = site_correlations(model_a, model_b, spec, batches, device, positions, seed, log)
    costs = _Costs(model_a.state_dict(), model_b.state_dict(), spec)
    perms, mean_corr, n_dead = {}, {}, {}
    for name in spec.groups:  # graph order: the groups feeding this one come first
        c = corr[name].copy()
        dead_a, dead_b = dead[name]
        c[dead_a, :] = np.nan
        c[:, dead_b] = np.nan
        match = bipartite_matching(c)  # dead units stay unmatched (-1)
        partner = match.partner.copy()
        rest_a = np.flatnonzero(partner < 0)
        if len(rest_a):
            rest_b = np.setdiff1d(np.arange(len(partner)), partner[partner >= 0])
            cost = costs(name, {**spec.identity(), **perms}, known=set(perms))
            rows, cols = linear_sum_assignment(cost[np.ix_(rest_a, rest_b)], maximize=True)
            partner[rest_a[rows]] = rest_b[cols]
        perms[name] = partner
        mean_corr[name] = float(np.nanmean(match.value)) if match.matched.any() else float("nan")
        n_dead[name] = (int(dead_a.sum()), int(dead_b.sum()))
    if log:
        dead_groups = {k: v for k, v in n_dead.items() if any(v)}
        if dead_groups:
            log(f"activation matching: units dead on the probe inputs (A, B), matched by weights: {dead_groups}")
    return perms, {"mean_correlation": mean_corr, "dead_units": n_dead}
