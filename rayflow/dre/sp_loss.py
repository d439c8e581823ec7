"""The "softplus" (SP) density-ratio loss of DRE-F-SP / cDR-RS, with the E_q[r] = 1 penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sp_loss"]


def sp_loss(r_real: torch.Tensor, r_fake: torch.Tensor, penalty: float = 0.0) -> torch.Tensor:
    r"""SP loss for a ratio model r(x) ~ p(x) / q(x), p = real, q = generator (fake).

    .. math::
        L = \overline{\sigma(r_q) r_q} - \overline{\mathrm{softplus}(r_q)} - \overline{\sigma(r_p)}
            + \lambda (\overline{r_q} - 1)^2

    where the bars are batch means over fake (``r_q``) and real (``r_p``) samples.

    Why the minimiser is p/q: the population loss is
    ``∫ q(x)[σ(r)r − softplus(r)] − p(x)σ(r) dx``; its integrand depends on r(x) only pointwise, and
    since ``softplus' = σ`` its derivative in r is
    ``q[σ'(r) r + σ(r) − σ(r)] − p σ'(r) = σ'(r) (q r − p)``.
    ``σ' > 0``, so the integrand decreases for r < p/q and increases for r > p/q: the unique minimiser
    is r(x) = p(x)/q(x). The penalty only pins the normalisation E_q[r] = 1, which the true ratio
    already satisfies (∫ q · p/q = 1), so it does not move the optimum; it stabilises finite-sample
    training (λ = 0.01 in the official code).

    Args:
        r_real: ratios of real samples, any shape (flattened).
        r_fake: ratios of fake samples, any shape (flattened).
        penalty: λ >= 0.
    Returns:
        scalar tensor.
    """
    if penalty < 0:
        raise ValueError(f"sp_loss: penalty must be >= 0, got {penalty}")
    r_real = r_real.reshape(-1)
    r_fake = r_fake.reshape(-1)
    loss = (torch.sigmoid(r_fake) * r_fake).mean() - F.softplus(r_fake).mean() - torch.sigmoid(r_real).mean()
    if penalty:
        loss = loss + penalty * (r_fake.mean() - 1.0) ** 2
    return loss
