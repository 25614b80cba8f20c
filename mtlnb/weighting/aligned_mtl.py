"""Aligned-MTL (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

import numpy as np

from .base import GradientWeighting, register


@register
class AlignedMTL(GradientWeighting):
    """Senushkin et al. 2023: align the task gradients so their matrix has condition number 1, then sum.

    With the Gramian G = VΛVᵀ, the balance matrix is B = √λ_min · V Λ^-½ Vᵀ and the
    coefficients are B·1 (LibMTL's scale; torchjd's is 1/K of it).
    """

    name = "aligned_mtl"
    paper = "Senushkin et al., Independent component alignment for multi-task learning, CVPR 2023"

    def coefficients(self, gramian: np.ndarray) -> np.ndarray:
        return self.balance_matrix(gramian) @ np.ones(len(gramian))

    @staticmethod
    def balance_matrix(gramian: np.ndarray) -> np.ndarray:
        eigenvalues, vectors = np.linalg.eigh(gramian)
        tolerance = max(eigenvalues.max(), 0.0) * len(gramian) * np.finfo(float).eps
        kept = eigenvalues > tolerance
        if not kept.any():
            return np.zeros_like(gramian)
        eigenvalues, vectors = eigenvalues[kept], vectors[:, kept]
        return np.sqrt(eigenvalues.min()) * (vectors / np.sqrt(eigenvalues)) @ vectors.T
