"""Ridge regression by the normal equations: the fit behind the prior's effects and harm's target effect."""

from __future__ import annotations

import numpy as np


def fit(x: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(coefficients, (XᵀX + Λ)⁻¹, residual variance) for Λ = diag(penalty). The residual variance is the
    residual sum of squares over n − the effective number of parameters, trace((XᵀX + Λ)⁻¹ XᵀX); None when
    that leaves no degree of freedom."""
    gram = x.T @ x
    inv = np.linalg.pinv(gram + np.diag(penalty))
    coef = inv @ (x.T @ y)
    resid = y - x @ coef
    dof = len(y) - float(np.trace(inv @ gram))
    return coef, inv, float(resid @ resid / dof) if dof > 0.5 else None
