"""Exact solvers on the k×k task Gramian, in float64 numpy (k is small: a Python loop of
numpy calls costs microseconds, a torch call several).
"""

from __future__ import annotations

import numpy as np


def min_norm_point(gramian: np.ndarray, tol: float = 1e-12, max_iter: int = 1000) -> np.ndarray:
    """Weights α on the simplex minimising ‖Σ αᵢ gᵢ‖², from the Gramian of the gᵢ (Wolfe 1976).

    Exact up to rounding: it stops when every task satisfies d·gᵢ ≥ ‖d‖² (the
    optimality condition of the min-norm point d of the convex hull).
    """
    k = len(gramian)
    scale = max(float(np.max(np.diag(gramian))), 1e-300)
    G = gramian / scale
    weights = np.zeros(k)
    support = [int(np.argmin(np.diag(G)))]
    weights[support[0]] = 1.0
    for _ in range(max_iter):
        projections = G @ weights
        norm2 = weights @ projections
        j = int(np.argmin(projections))
        if projections[j] >= norm2 - tol or j in support:
            break
        support.append(j)
        while True:  # minor cycle: move to the affine minimiser of the support, staying in the simplex
            affine = _affine_min_norm(G[np.ix_(support, support)])
            current = weights[support]
            if np.all(affine > tol):
                weights[:] = 0.0
                weights[support] = affine
                break
            shrinking = affine <= tol
            step = np.min(current[shrinking] / (current[shrinking] - affine[shrinking]))
            moved = current + step * (affine - current)
            weights[:] = 0.0
            weights[support] = moved
            support = [i for i, w in zip(support, moved, strict=True) if w > tol]
            weights[[i for i in range(k) if i not in support]] = 0.0
    return weights / weights.sum()


def _affine_min_norm(G: np.ndarray) -> np.ndarray:
    """argmin xᵀGx subject to Σx = 1 (the KKT system, least squares if singular)."""
    s = len(G)
    kkt = np.zeros((s + 1, s + 1))
    kkt[:s, :s] = G
    kkt[:s, s] = 1.0
    kkt[s, :s] = 1.0
    rhs = np.zeros(s + 1)
    rhs[s] = 1.0
    return _solve(kkt, rhs)[:s]


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """np.linalg.solve (8 µs), least squares (40 µs) only when the system is singular."""
    try:
        solution = np.linalg.solve(matrix, rhs)
        if np.all(np.isfinite(solution)):
            return solution
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def cagrad_weights(gramian: np.ndarray, c: float, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """argmin over the simplex of F(w) = wᵀ G b + √φ ‖Σ wᵢ gᵢ‖, b = 1/k, φ = c² ‖g₀‖² (Liu et al. 2021).

    Active-set Newton: Newton steps in the affine hull of a working set of tasks,
    truncated at the simplex boundary with a backtracking line search. A task at 0
    whose step would be negative leaves the working set; a task outside it joins when
    its partial derivative is below the working set's multiplier (the KKT conditions).
    """
    k = len(gramian)
    scale = max(float(np.trace(gramian)) / k, 1e-300)
    G = gramian / scale
    b = np.full(k, 1.0 / k)
    a = G @ b
    sqrt_phi = c * np.sqrt(max(b @ a, 0.0))

    interior = _cagrad_interior(G, a, b, sqrt_phi)
    if interior is not None:
        return interior

    def value(w: np.ndarray) -> float:
        return float(a @ w + sqrt_phi * np.sqrt(max(w @ G @ w, 0.0)))

    w = b.copy()
    free = np.ones(k, dtype=bool)
    entered = np.zeros(k, dtype=bool)
    for _ in range(max_iter):
        Gw = G @ w
        r = np.sqrt(max(w @ Gw, 1e-300))
        grad = a + sqrt_phi * Gw / r
        hessian = sqrt_phi * (G / r - np.outer(Gw, Gw) / r**3) + 1e-12 * np.eye(k)
        while True:
            direction, multiplier = _newton_on_simplex_face(hessian, grad, free)
            if (direction[entered] < 0).any() or grad @ direction > 0:
                # Near a vertex the face Hessian is almost singular and Newton can point the
                # wrong way: the projected gradient on the face is a descent direction.
                direction = np.where(free, -(grad - grad[free].mean()), 0.0)
            blocked = free & (w <= tol) & (direction < -tol)
            if not blocked.any():
                break
            free &= ~blocked
        entered[:] = False
        if np.max(np.abs(direction)) <= 1e-13:
            entering = ~free & (grad < multiplier - 1e-12 * max(1.0, abs(multiplier)))
            if not entering.any():
                break
            j = int(np.argmin(np.where(entering, grad, np.inf)))
            free[j] = entered[j] = True
            continue
        shrinking = direction < 0
        step = min(1.0, float(np.min(-w[shrinking] / direction[shrinking]))) if shrinking.any() else 1.0
        current, slope = value(w), grad @ direction
        while step > 1e-16 and value(w + step * direction) > current + 1e-4 * step * slope:
            step /= 2
        w = np.clip(w + step * direction, 0.0, None)
        w /= w.sum()
        free |= w > tol
    return w


def _cagrad_interior(G: np.ndarray, a: np.ndarray, b: np.ndarray, sqrt_phi: float) -> np.ndarray | None:
    """CAGrad's minimiser in closed form when it lies inside the simplex (the usual case), else None.

    Inside, ∇F = a + √φ G w / ‖g_w‖ = λ1. With a = G b and u = G⁻¹1 this gives
    w = t(λu − b), t = ‖g_w‖/√φ; ‖g_w‖² = t²φ makes λ a root of sᵤλ² − 2λ + (bᵀGb − φ) = 0
    (sᵤ = Σuᵢ) and Σw = 1 fixes t. One k×k solve instead of the active-set Newton's
    five or so (300 µs for three tasks, 10% of the benchmark's step); the answer is
    kept only if it is strictly inside and meets the stationarity condition.
    """
    if sqrt_phi <= 0:
        return None
    try:
        u = np.linalg.solve(G, np.ones(len(G)))
    except np.linalg.LinAlgError:
        return None
    s_u = float(u.sum())
    discriminant = 1.0 - s_u * (float(b @ a) - sqrt_phi**2)
    if not (s_u > 0 and discriminant > 0 and np.all(np.isfinite(u))):
        return None
    root = np.sqrt(discriminant)  # λ sᵤ − 1, positive: the root with t > 0
    w = ((1.0 + root) / s_u * u - b) / root
    Gw = G @ w
    norm = np.sqrt(max(float(w @ Gw), 0.0))
    if not (np.all(w > 1e-9) and norm > 0):
        return None
    grad = a + sqrt_phi * Gw / norm
    if np.ptp(grad) > 1e-10 * max(1.0, float(np.max(np.abs(grad)))):
        return None  # ill-conditioned G: leave it to the active-set method
    return w / w.sum()


def _newton_on_simplex_face(hessian: np.ndarray, grad: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, float]:
    """Newton direction moving only the free coordinates with Σd = 0, and the KKT multiplier."""
    idx = np.flatnonzero(free)
    s = len(idx)
    kkt = np.zeros((s + 1, s + 1))
    kkt[:s, :s] = hessian[np.ix_(idx, idx)]
    kkt[:s, s] = 1.0
    kkt[s, :s] = 1.0
    solution = _solve(kkt, np.concatenate([-grad[idx], [0.0]]))
    direction = np.zeros(len(grad))
    direction[idx] = solution[:s]
    return direction, float(-solution[s])


def nash_bargaining(gramian: np.ndarray, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """α > 0 with (G α)ᵢ = 1/αᵢ, the Nash bargaining solution (Navon et al. 2022).

    It is the minimiser of ½ αᵀGα − Σ log αᵢ (strictly convex), found by Newton's method
    with steps that keep α positive. A tiny ridge keeps it defined when gradients are
    exactly opposed (then no bargain exists and α grows without bound).
    """
    k = len(gramian)
    scale = max(float(np.trace(gramian)) / k, 1e-300)
    G = gramian / scale + 1e-10 * np.eye(k)
    alpha = 1.0 / np.sqrt(np.diag(G))
    for _ in range(max_iter):
        residual = G @ alpha - 1.0 / alpha
        if np.max(np.abs(residual * alpha)) < tol:
            break
        hessian = G + np.diag(1.0 / alpha**2)
        direction = -np.linalg.solve(hessian, residual)
        step = 1.0
        while np.any(alpha + step * direction <= 0):
            step /= 2
        objective = 0.5 * alpha @ G @ alpha - np.log(alpha).sum()
        while step > 1e-16:
            trial = alpha + step * direction
            if 0.5 * trial @ G @ trial - np.log(trial).sum() <= objective + 1e-4 * step * (residual @ direction):
                break
            step /= 2
        alpha = alpha + step * direction
    return alpha / np.sqrt(scale)  # the solution for the unscaled Gramian
