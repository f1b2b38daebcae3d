"""Shared setup of the diabetes examples: data, architecture and learning rate."""

import ntkcore
import numpy as np

N_TRAIN = 64
ARCH = ntkcore.FullyConnected(depth=2, activation="relu", W_std=2**0.5, b_std=0.0)


def load(n=N_TRAIN, seed=0):
    """``n`` random points of scikit-learn's diabetes data, features and target standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    idx = np.random.default_rng(seed).choice(len(x), size=n, replace=False)
    x, y = x[idx], y[idx]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = (y - y.mean()) / y.std()
    return x, y


def learning_rate(x, fraction=1.0):
    """``fraction / lambda_max`` of the infinite-width NTK on ``x`` (stable: < 2 / lambda_max)."""
    return fraction / np.linalg.eigvalsh(ARCH.ntk(x))[-1]
