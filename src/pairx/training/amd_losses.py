"""AMD losses (Chen et al., ICCV 2021, Section 3.3): metric distillation and attribute prior.

For a pair with target distance ``d`` and attribute distances ``d^k`` (``k = 1..M``), the
contribution shares are ``s^k = d^k / sum_j d^j`` and the pairwise attribute vector is
``a_ij = a_i XOR a_j`` (Eq. 5): ``M_E`` exclusive attributes (``a_ij = 1``), ``M - M_E`` common
ones. With ``r = (M_E / M) ** v``:

* Eq. 4, distillation: ``L_d = |d - sum_k d^k|``;
* Eq. 7, group prior: ``L_p1 = max(0, r - sum_e s^e) + max(0, sum_c s^c - (1 - r))``;
* Eq. 10, per-attribute prior: ``L_p2 = sum_e max(0, b_e - s^e) + sum_c max(0, s^c - b_c)``;
* Eq. 11: ``L = L_d + alpha L_p1 + beta L_p2`` (paper: ``alpha = 10``, ``beta = 50``,
  ``v = 0.5``).

Where the paper is garbled we follow the authors' code (``bool_similarity`` and
``quadratic_exp`` in SheldongChen/AMD.github.io): the shares in Eq. 6-10 are divided by the
reconstructed distance ``sum_j d^j`` (the paper's ``\\hat d^e`` in the denominators), and the
bounds of Eq. 8 are ``b_e = exp(-lambda) r / M_E`` for an exclusive attribute and
``b_c = exp(lambda) (1 - r) / (M - M_E)`` for a common one: the group shares of Eq. 6 split
evenly, loosened by ``exp(-/+lambda)``. Equating the two bounds ("we let the upper bound and
lower bound be equal") gives ``lambda = 1/2 ln(r (M - M_E) / (M_E (1 - r)))``
(:func:`prior_lambda`), which is what the code computes (the printed Eq. 8 would force
``lambda = 0`` and the printed Eq. 9 does not equate its bounds). Both bounds then equal
``sqrt(r (1 - r) / (M_E (M - M_E)))``. Where one group is empty (``M_E = 0`` or ``M``) its terms
vanish and ``lambda = 0`` (the code adds small constants there instead). The code's extra colour
terms (Market-1501 specific) and its attribute-classification branch are not part of the paper
and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AMDLoss", "amd_loss", "exclusive_share", "prior_bounds", "prior_lambda"]


def exclusive_share(m_e: torch.Tensor, m: int, v: float) -> torch.Tensor:
    """``r = (M_E / M) ** v`` (Eq. 6): the least total share of the exclusive attributes
    (float64; the losses cast it to the distances' dtype)."""
    return (m_e.to(torch.float64) / m).pow(v)


def prior_lambda(m_e: torch.Tensor, m: int, v: float) -> torch.Tensor:
    """``lambda`` of Eq. 9 (the code's form, see the module docstring); 0 where a group is empty.

    Parameters
    ----------
    m_e
        Number of exclusive attributes, any shape (integers as a tensor).
    m
        Number of attributes ``M``.
    v
        Exponent ``v`` in ``(0, 1)``.
    """
    r = exclusive_share(m_e, m, v)
    inner = (m_e > 0) & (m_e < m)
    me = m_e.to(r.dtype).clamp(1, m - 1)
    rr = r.clamp(1e-12, 1 - 1e-12)
    lam = 0.5 * torch.log(rr * (m - me) / (me * (1 - rr)))
    return torch.where(inner, lam, torch.zeros_like(lam))


def prior_bounds(m_e: torch.Tensor, m: int, v: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-attribute bounds of Eq. 8: ``(b_e, b_c)``, the lower bound of each exclusive share and
    the upper bound of each common share (equal wherever both groups are non-empty)."""
    r = exclusive_share(m_e, m, v)
    lam = prior_lambda(m_e, m, v)
    me = m_e.to(r.dtype)
    b_e = torch.exp(-lam) * r / me.clamp_min(1)
    b_c = torch.exp(lam) * (1 - r) / (m - me).clamp_min(1)
    return b_e, b_c


@dataclass(frozen=True)
class AMDLoss:
    """Loss terms averaged over pairs (each a scalar tensor)."""

    total: torch.Tensor
    distill: torch.Tensor
    prior_group: torch.Tensor
    prior_each: torch.Tensor


def amd_loss(
    d: torch.Tensor,
    d_k: torch.Tensor,
    exclusive: torch.Tensor,
    *,
    alpha: float = 10.0,
    beta: float = 50.0,
    v: float = 0.5,
    eps: float = 1e-12,
) -> AMDLoss:
    """Eq. 11 for a set of pairs.

    Parameters
    ----------
    d
        ``(P,)`` target distances (no gradient needed).
    d_k
        ``(P, M)`` attribute distances.
    exclusive
        ``(P, M)`` bool, ``a_i XOR a_j``.
    alpha, beta, v
        Eq. 11 and Eq. 6 factors.
    eps
        Guards the shares of a pair whose attribute distances are all zero.
    """
    if d_k.dim() != 2 or exclusive.shape != d_k.shape or d.shape != d_k.shape[:1]:
        raise ValueError(f"shapes d {tuple(d.shape)}, d_k {tuple(d_k.shape)}, exclusive "
                         f"{tuple(exclusive.shape)} do not fit (P,), (P, M), (P, M)")
    m = d_k.shape[1]
    d_hat = d_k.sum(1)
    distill = (d - d_hat).abs()
    share = d_k / (d_hat[:, None] + eps)
    ex = exclusive.to(share.dtype)
    m_e = exclusive.sum(1)
    r = exclusive_share(m_e, m, v).to(share.dtype)
    p1 = (r - (share * ex).sum(1)).clamp_min(0) + ((share * (1 - ex)).sum(1) - (1 - r)).clamp_min(0)
    b_e, b_c = (b.to(share.dtype) for b in prior_bounds(m_e, m, v))
    p2 = ((b_e[:, None] - share).clamp_min(0) * ex).sum(1) + (
        (share - b_c[:, None]).clamp_min(0) * (1 - ex)
    ).sum(1)
    total = distill.mean() + alpha * p1.mean() + beta * p2.mean()
    return AMDLoss(total, distill.mean(), p1.mean(), p2.mean())
