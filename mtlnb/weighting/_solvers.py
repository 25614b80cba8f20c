"""Exact solvers on the k×k task Gramian, in float64 numpy (k is small: a Python loop of
numpy calls costs microseconds, a torch call several).
"""

from __future__ import annotations

import functools
import itertools

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


def cagrad_weights(
    gramian: np.ndarray, c: float, start: np.ndarray | None = None, tol: float = 1e-12, max_iter: int = 200
) -> np.ndarray:
    """argmin over the simplex of F(w) = wᵀ G b + √φ ‖Σ wᵢ gᵢ‖, b = 1/k, φ = c² ‖g₀‖² (Liu et al. 2021).

    First in closed form (`_cagrad_closed_form`): the minimiser on a face of the simplex,
    kept where it meets the optimality (KKT) conditions. `start` (the previous step's
    answer) only says which face to try first. Where no face gives it (c = 0, a singular
    Gramian, more than five tasks and neither the start's face nor the whole simplex):
    active-set Newton, Newton steps in the affine hull of a working set of tasks,
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

    found = _cagrad_closed_form(G, a, sqrt_phi, start)
    if found is not None:
        return found

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


def _cagrad_closed_form(G: np.ndarray, a: np.ndarray, sqrt_phi: float, start: np.ndarray | None) -> np.ndarray | None:
    """The minimiser from the faces' closed forms, or None: tried on the face of `start`,
    at every vertex at once, on the whole simplex, then (k <= 5) on every other face.

    In training the face rarely stays the same from step to step (in the benchmark, a
    vertex one step, an edge the next), hence the vertices all at once and the rest after.
    """
    if sqrt_phi <= 0:  # F is linear: no stationary point to solve for
        return None
    k = len(G)
    tried = []
    if start is not None and np.shape(start) == (k,) and np.any(start > 1e-9):
        tried.append(np.asarray(start) > 1e-9)
        if (found := _cagrad_on_face(G, a, sqrt_phi, tried[0])) is not None:
            return found
    if (found := _cagrad_at_a_vertex(G, a, sqrt_phi)) is not None:
        return found
    for face in _all_faces(k) if k <= 5 else [np.ones(k, dtype=bool)]:  # the whole simplex first
        if face.sum() > 1 and not any(np.array_equal(face, seen) for seen in tried):
            tried.append(face)
            if (found := _cagrad_on_face(G, a, sqrt_phi, face)) is not None:
                return found
    return None


@functools.cache
def _all_faces(k: int) -> list[np.ndarray]:
    """Every face of the (k−1)-simplex as a mask, larger first."""
    faces = (np.array(f) for f in itertools.product((True, False), repeat=k) if any(f))
    return sorted(faces, key=lambda f: -int(f.sum()))


def _cagrad_at_a_vertex(G: np.ndarray, a: np.ndarray, sqrt_phi: float) -> np.ndarray | None:
    """The vertex eᵢ that meets the KKT conditions, if one does: all k checked in one product.

    At eᵢ the gradient of F is a + √φ G[:, i] / √Gᵢᵢ; eᵢ is optimal if no entry is below its i-th.
    """
    diagonal = np.diag(G)
    if not np.all(diagonal > 0):
        return None
    grads = a[:, None] + sqrt_phi * G / np.sqrt(diagonal)  # column i: the gradient at eᵢ
    own = np.diag(grads)
    slack = 1e-10 * np.maximum(1.0, np.max(np.abs(grads), axis=0))
    optimal = np.all(grads >= own - slack, axis=0)
    if not optimal.any():
        return None
    w = np.zeros(len(G))
    w[int(np.argmax(optimal))] = 1.0
    return w


def _cagrad_on_face(G: np.ndarray, a: np.ndarray, sqrt_phi: float, face: np.ndarray) -> np.ndarray | None:
    """CAGrad's minimiser if it lies on `face` (w > 0 exactly there), else None.

    The face's minimiser in closed form (`_cagrad_face_minimiser`), kept if it is inside
    the face, stationary on it, and no task off it has a partial derivative below the
    face's multiplier: the KKT conditions of this convex problem. One small solve where
    a Newton iteration costs about as much and five or so are needed (300 µs for three
    tasks, 10% of the benchmark's step).
    """
    w = _cagrad_face_minimiser(G, a, sqrt_phi, face)
    if w is None or not np.all(w[face] > 1e-12):
        return None
    Gw = G @ w
    norm = np.sqrt(max(float(w @ Gw), 0.0))
    if norm <= 0:
        return None
    grad = a + sqrt_phi * Gw / norm
    slack = 1e-10 * max(1.0, float(np.max(np.abs(grad))))
    multiplier = float(grad[face].mean())
    if np.ptp(grad[face]) > slack or np.any(grad[~face] < multiplier - slack):
        return None  # not optimal here, or G too ill-conditioned for the closed form
    return w / w.sum()


def _cagrad_face_minimiser(G: np.ndarray, a: np.ndarray, sqrt_phi: float, face: np.ndarray) -> np.ndarray | None:
    """The minimiser of F over the affine hull of a face S (zeros off S), or None if none in closed form.

    Stationarity a_S + √φ (G w)_S / ‖g_w‖ = λ1 gives w_S = t(λu − v), with u = G_S⁻¹1,
    v = G_S⁻¹a_S and t = ‖g_w‖/√φ; ‖g_w‖² = t²φ makes λ a root of
    sᵤλ² − 2s_vλ + a_Sᵀv − φ = 0 (s = Σ), and Σw = 1 fixes t = 1/(λsᵤ − s_v) > 0.
    """
    on = np.flatnonzero(face)
    try:
        solved = np.linalg.solve(G[np.ix_(on, on)], np.stack([np.ones(len(on)), a[on]], axis=1))
    except np.linalg.LinAlgError:
        return None
    u, v = solved[:, 0], solved[:, 1]
    s_u, s_v = float(u.sum()), float(v.sum())
    discriminant = s_v**2 - s_u * (float(a[on] @ v) - sqrt_phi**2)
    if not (s_u > 0 and discriminant > 0 and np.all(np.isfinite(solved))):
        return None
    root = np.sqrt(discriminant)  # λsᵤ − s_v, the root with t > 0
    z = np.zeros(len(G))
    z[on] = ((s_v + root) / s_u * u - v) / root
    return z


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
