"""A data-generating process with known truth for the decision rules (gate, exact bounds, promotion).

Random-intercept model: patient i has a label y_i (Bernoulli(prevalence), shared by its images) and 1 + Poisson(1.5)
images (at most 6); image j scores s_ij = mu * y_i + u_i + e_ij with a patient intercept u_i ~ N(0, rho) and image
noise e_ij ~ N(0, 1 - rho), and prob = expit(s_ij). Every positive-negative image pair comes from two patients, so
the image-level AUROC is exactly Phi(mu / sqrt(2)); at a threshold t on s, sensitivity is 1 - Phi(t - mu) and
specificity Phi(t). `rho` is the intra-patient correlation of the scores (the design effect's source).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

_N = NormalDist()


def mu_for_auroc(auroc: float) -> float:
    """The class separation whose image-level AUROC is `auroc`."""
    return math.sqrt(2) * _N.inv_cdf(auroc)


def true_rates(mu: float, t: float) -> tuple[float, float]:
    """(sensitivity, specificity) at the latent threshold t."""
    return 1 - _N.cdf(t - mu), _N.cdf(t)


def prob_threshold(t: float) -> float:
    """The probability threshold of the latent threshold t (prob = expit(s))."""
    return 1 / (1 + math.exp(-t))


def simulate(
    n_patients: int,
    auroc: float,
    rng: np.random.Generator,
    prevalence: float = 0.5,
    rho: float = 0.5,
    prefix: str = "p",
) -> pd.DataFrame:
    """One test set: image_id, patient_id, cluster_id, label, prob, source, split (test)."""
    mu = mu_for_auroc(auroc)
    y = rng.random(n_patients) < prevalence
    y[0], y[-1] = True, False  # both classes present
    m = np.minimum(1 + rng.poisson(1.5, n_patients), 6)
    patient = np.repeat(np.arange(n_patients), m)
    u = rng.normal(0, math.sqrt(rho), n_patients)
    s = mu * y[patient] + u[patient] + rng.normal(0, math.sqrt(1 - rho), patient.size)
    ids = pd.Series([f"{prefix}{i}" for i in patient], dtype="string")
    return pd.DataFrame(
        {
            "image_id": pd.Series([f"{prefix}{i}-{k}" for k, i in enumerate(patient)], dtype="string"),
            "patient_id": ids,
            "cluster_id": ids,
            "label": y[patient].astype(np.int8),
            "prob": 1 / (1 + np.exp(-s)),
            "source": "hospital",
            "split": "test",
        }
    )
