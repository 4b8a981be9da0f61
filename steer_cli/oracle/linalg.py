"""The oracle's numbers, as pure functions of token matrices (rows = tokens, columns = features).

Everything here runs in float64: the inputs are float32 activations, and Gram matrices, least
squares and principal angles would otherwise lose the digits the answers live in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ENERGY_LEVELS = (0.9, 0.99)
RTOL = 1e-6  # singular values below this share of the largest are float32 rounding


def mlp_share_of_update(
    mlp_out: torch.Tensor, block_in: torch.Tensor, block_out: torch.Tensor
) -> torch.Tensor:
    """Per token, ``||m|| / ||O - I||``: the MLP write ``m`` against the block's whole update
    ``O - I = a + m`` (attention's write ``a`` and the MLP's, after Gemma's sandwich norms, since
    ``mlp_out`` is the ``mlp_output`` site's tensor). Tokens whose update is exactly 0 are dropped.

    Not a share in [0, 1]: where ``a`` and ``m`` point apart they partly cancel, the update is
    shorter than ``m`` alone and the ratio exceeds 1 (on a quarter to a third of SmolLM2's
    tokens). So its mean is not the paper's 40-70%; :func:`mlp_share_of_writes` is.
    """
    update = (block_out.double() - block_in.double()).norm(dim=-1)
    mlp = mlp_out.double().norm(dim=-1)
    keep = update > 0
    return mlp[keep] / update[keep]


def mlp_share_of_output(mlp_out: torch.Tensor, block_out: torch.Tensor) -> torch.Tensor:
    """Per token, ``||m|| / ||O||``: the MLP write against the block's output ``O`` (the
    residual stream after the block). The paper's own words for its Fig. 2: "average MLP output
    norm with respect to the layer's block output". Tokens whose block output is 0 are dropped."""
    out = block_out.double().norm(dim=-1)
    keep = out > 0
    return mlp_out.double().norm(dim=-1)[keep] / out[keep]


def mlp_share_of_writes(mlp_out: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Per token, ``||m|| / (||a|| + ||m||)``: the MLP's part of the magnitude the two branches
    write, in [0, 1] (the paper's Fig. 2 reading: "MLP outputs account for only 40-70% of total
    block output magnitude"), which a post-MLP site sees. Tokens with no write are dropped."""
    mlp = mlp_out.double().norm(dim=-1)
    total = attn_out.double().norm(dim=-1) + mlp
    keep = total > 0
    return mlp[keep] / total[keep]


@dataclass
class Spectrum:
    """The eigenvalues of a set of vectors' second moment (or covariance), largest first, and
    its ranks."""

    eigenvalues: torch.Tensor
    effective_rank: float
    """``exp(entropy)`` of the normalized eigenvalues (Roy & Vetterli, 2007): ``k`` for ``k``
    equally strong directions, less when a few dominate; no threshold to pick."""
    energy_rank: dict[float, int]
    """Fewest directions holding each fraction of the energy (sum of eigenvalues)."""

    def as_dict(self, top: int = 32) -> dict:
        total = float(self.eigenvalues.sum())
        return {
            "effective_rank": self.effective_rank,
            **{f"rank_{round(q * 100)}": k for q, k in self.energy_rank.items()},
            "top_energy_fractions": [
                float(v) / total if total > 0 else 0.0 for v in self.eigenvalues[:top]
            ],
        }


def spectrum(vectors: torch.Tensor, *, centred: bool = False) -> Spectrum:
    """The spectrum of ``E[v v^T]`` over the rows of ``vectors``, or of their covariance
    ``E[(v - mean)(v - mean)^T]`` with ``centred``.

    The uncentered second moment counts the mean as one more direction: a steering adapter's
    output space (``W_up``'s columns) must hold the oracle's mean shift too (the bias of a
    ``lowrank`` adapter holds it without rank). The covariance is what the blog's "their
    covariance had a concentrated spectrum" names.
    """
    v = vectors.double()
    if centred:
        v = v - v.mean(0)
    eig = torch.linalg.eigvalsh(v.T @ v / max(1, v.shape[0])).flip(0).clamp(min=0)
    total = eig.sum()
    if total <= 0:
        return Spectrum(eig, 0.0, {q: 0 for q in ENERGY_LEVELS})
    p = eig / total
    nz = p[p > 0]
    effective = float(torch.exp(-(nz * nz.log()).sum()))
    cumulative = p.cumsum(0)
    ranks = {
        q: int(torch.searchsorted(cumulative, torch.tensor(q - 1e-12, dtype=p.dtype))) + 1
        for q in ENERGY_LEVELS
    }
    return Spectrum(eig, effective, ranks)


@dataclass
class LinearMap:
    """``delta = (h - mean_in) @ weight + mean_out``: a least-squares fit, maybe rank-limited."""

    weight: torch.Tensor  # [d_in, d_out]
    mean_in: torch.Tensor
    mean_out: torch.Tensor
    r2: float | None
    """Share of the target's variance (about its mean) the fit explains, on the fitted tokens;
    ``None`` when the target does not vary (an oracle that is 0: nothing to explain)."""

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(h.dtype)
        return (h - self.mean_in.to(h.dtype)) @ w + self.mean_out.to(h.dtype)

    def residual(self, h: torch.Tensor, delta: torch.Tensor) -> tuple[float, float]:
        """``(sum ||delta - map(h)||^2, sum ||delta||^2)`` over the rows: pooled over sets of
        tokens (folds), their ratio's root is the relative error of the map on them."""
        h64, d64 = h.double(), delta.double()
        miss = d64 - ((h64 - self.mean_in.double()) @ self.weight.double() + self.mean_out.double())
        return float(miss.pow(2).sum()), float(d64.pow(2).sum())


def fit_linear(
    x: torch.Tensor, y: torch.Tensor, *, ranks: tuple[int | None, ...] = (None,), bias: bool = True
) -> list[LinearMap]:
    """The least-squares maps ``y ~ x W (+ b)``, one per entry of ``ranks`` (``None``: full).

    A rank-r map is reduced-rank regression: the full fit's predictions projected on their own
    top-r principal directions (``W_r = W V_r V_r^T``), the optimum of ``||Y - X W||_F`` over
    ``rank(W) <= r``. ``bias`` centers both sides first (the intercept is not rank-limited, as a
    ``lowrank`` adapter's bias is not). Solved through the Gram matrices (``d x d``; the
    minimum-norm solution when ``x`` is rank-deficient): tokens outnumber features, and this is
    many times faster than factoring the ``tokens x d`` matrix.
    """
    x64, y64 = x.double(), y.double()
    mean_in = x64.mean(0) if bias else torch.zeros(x64.shape[1], dtype=x64.dtype)
    mean_out = y64.mean(0) if bias else torch.zeros(y64.shape[1], dtype=y64.dtype)
    xc, yc = x64 - mean_in, y64 - mean_out
    gram = xc.T @ xc
    cross = xc.T @ yc
    eig, vecs = torch.linalg.eigh(gram)  # pseudo-inverse: as column_basis, drop rounding
    keep = eig > RTOL**2 * eig[-1].clamp(min=torch.finfo(eig.dtype).tiny)
    full = vecs[:, keep] @ ((vecs[:, keep].T @ cross) / eig[keep, None])
    variance = float((y64 - y64.mean(0)).pow(2).sum())
    y_energy = float(yc.pow(2).sum())
    maps = []
    fitted = None  # the eigenvectors of fitted^T fitted, shared by every rank
    for rank in ranks:
        weight = full
        if rank is not None and rank < min(full.shape):
            if fitted is None:
                _, fitted = torch.linalg.eigh(full.T @ gram @ full)  # = fitted^T fitted
            top = fitted[:, -rank:]
            weight = full @ top @ top.T
        # ||Y - XW||^2 = ||Y||^2 - 2 tr(W^T X^T Y) + tr(W^T X^T X W)
        explained = 2 * float((weight * cross).sum()) - float((weight * (gram @ weight)).sum())
        r2 = 1.0 - max(y_energy - explained, 0.0) / variance if variance > 0 else None
        maps.append(LinearMap(weight.float(), mean_in.float(), mean_out.float(), r2))
    return maps


def column_basis(a: torch.Tensor, rtol: float = RTOL) -> torch.Tensor:
    """An orthonormal basis (fp64) of ``col(a)``; rows = tokens, so this is the paper's
    right-singular, sample-space subspace. Directions with singular values below ``rtol *
    largest`` are dropped: float32 activations carry about 7 digits, the rest is rounding.
    From the eigenvectors of the ``d x d`` Gram matrix (``Q = a V S^-1``), not an SVD of the tall
    matrix: same subspace at these tolerances, many times faster."""
    a64 = a.double()
    eig, vecs = torch.linalg.eigh(a64.T @ a64)
    if eig.numel() == 0 or eig[-1] <= 0:
        return a64[:, :0]
    keep = eig > (rtol**2) * eig[-1]
    return a64 @ (vecs[:, keep] / eig[keep].sqrt())


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The principal angles (radians, smallest first) between ``col(a)`` and ``col(b)``:
    ``min(dim a, dim b)`` of them, from the singular values of ``Q_a^T Q_b``."""
    return _angles(column_basis(a), column_basis(b))


def _angles(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    cos = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.arccos(cos).sort().values


@dataclass
class Expressivity:
    """Theorem 3.1: how well a linear post-block steer ``O B`` can match a post-MLP steer ``T``."""

    relative_error: float | None
    """``min_B ||T - O B||_F / ||T||_F``: what of ``T`` lies outside ``col(O)`` (``None`` when
    ``T = 0``). Exactly 0 whenever ``O`` has as many independent columns as tokens (tokens <=
    hidden size): then ``col(O)`` is all of token space, whatever ``T`` is."""
    angles: torch.Tensor
    """Principal angles between ``col(T)`` and ``col(O)``, smallest first."""

    def as_dict(self) -> dict:
        deg = torch.rad2deg(self.angles)
        return {
            "relative_error": self.relative_error,
            "angles_deg": [float(a) for a in deg],
            "max_angle_deg": float(deg.max()) if deg.numel() else 0.0,
        }


def expressivity(block_out: torch.Tensor, target: torch.Tensor) -> Expressivity:
    """Theorem 3.1 on token matrices: ``block_out`` is ``O`` (the post-block site's input, one row
    per token) and ``target`` the post-MLP steer's output ``T = A_p GLU(Y)`` on the same tokens.

    The best ``B`` is ``O^+ T``, so the optimal error is the part of ``T`` outside ``col(O)``, the
    span of ``O``'s right-singular vectors in the paper's feature-by-token layout; the theorem
    bounds it through the principal angles between that span and ``T``'s, weighted by ``T``'s
    singular values. Both are computed exactly here.
    """
    q = column_basis(block_out)
    t = target.double()
    norm = float(t.norm())
    error = float((t - q @ (q.T @ t)).norm()) / norm if norm > 0 else None
    return Expressivity(error, _angles(column_basis(t), q))
