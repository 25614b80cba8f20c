"""IMTL-G, impartial multi-task learning, gradient part (Liu et al., ICLR 2021)."""

from __future__ import annotations

import numpy as np

from .base import GradientWeighting, register


@register
class IMTLG(GradientWeighting):
    """Liu et al. 2021 (IMTL-G): d = Σ αᵢgᵢ, Σαᵢ = 1, with equal projections d·uᵢ on every unit gradient uᵢ."""

    name = "imtl_g"
    paper = "Liu et al., Towards impartial multi-task learning, ICLR 2021"

    def coefficients(self, gramian: np.ndarray) -> np.ndarray:
        k = len(gramian)
        norms = np.sqrt(np.clip(np.diag(gramian), 1e-300, None))
        if k == 1:
            return np.ones(1)
        # gᵢ·uⱼ = Gᵢⱼ/‖gⱼ‖. Rows: D = g₁ − gₐ, U = u₁ − u_b for a, b = 2..k.
        projections = gramian / norms[None, :]
        first = projections[0, 0] - projections[0, 1:]  # g₁·(u₁ − u_b)
        du = projections[0, 0] - projections[0, 1:][None, :] - projections[1:, 0][:, None] + projections[1:, 1:]
        rest = np.linalg.lstsq(du.T, first, rcond=None)[0]  # α₂..k = g₁Uᵀ (DUᵀ)⁻¹
        return np.concatenate([[1.0 - rest.sum()], rest])
