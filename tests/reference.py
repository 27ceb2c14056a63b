"""Plain-numpy reference implementations of the DML optimizers and schedule,
written independently of the DML code to check it step by step."""
from __future__ import annotations

import numpy as np


def sgd_momentum(w, g, lr, mu, v, lam):
    v = mu * v + lr * (g + lam * w)
    return w - v, v


def lars(w, g, lr, mu, v, lam, trust):
    wn, gn = np.linalg.norm(w), np.linalg.norm(g)
    local = trust * wn / (gn + lam * wn) if wn > 0 and gn > 0 else 1.0
    v = mu * v + lr * local * (g + lam * w)
    return w - v, v


def lamb(w, g, lr, b1, b2, eps, t, m, v, lam):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + lam * w
    wn, un = np.linalg.norm(w), np.linalg.norm(u)
    ratio = wn / un if wn > 0 and un > 0 else 1.0
    return w - lr * ratio * u, m, v


def nesterov(w, g, lr, mu, v, lam):
    """Nesterov momentum, velocity = lr-scaled step (the DML convention)."""
    g = g + lam * w
    v = mu * v + lr * g
    return w - (mu * v + lr * g), v


def adamw(w, g, lr, b1, b2, eps, t, m, v, lam):
    """AdamW: bias-corrected Adam step plus decoupled decay, both scaled by lr."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w - lr * (step + lam * w), m, v


def inverse_time(lr0, decay, t):
    return lr0 / (1 + decay * t)


def run(optimizer, w0, grads, lrs, mu=0.9, lam=0.0, trust=0.001, b1=0.9, b2=0.999, eps=1e-6):
    """Apply len(grads) steps from w0; returns the final w."""
    w = np.array(w0, dtype=float)
    v = np.zeros_like(w)
    m = np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = np.asarray(g, dtype=float)
        if optimizer == "sgd":
            w, v = sgd_momentum(w, g, lr, mu, v, lam)
        elif optimizer == "nesterov":
            w, v = nesterov(w, g, lr, mu, v, lam)
        elif optimizer == "lars":
            w, v = lars(w, g, lr, mu, v, lam, trust)
        elif optimizer == "adamw":
            w, m, v = adamw(w, g, lr, b1, b2, eps, t, m, v, lam)
        elif optimizer == "lamb":
            w, m, v = lamb(w, g, lr, b1, b2, eps, t, m, v, lam)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
    return w
