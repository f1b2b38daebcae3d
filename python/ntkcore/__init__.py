"""ntkcore: exact infinite-width NNGP and NTK Gram matrices of deep fully-connected and convolutional networks.

>>> import numpy as np, ntkcore
>>> net = ntkcore.FullyConnected(depth=3, activation="relu", W_std=2**0.5, b_std=0.1)
>>> k = net.kernels(np.random.default_rng(0).standard_normal((5, 8)))
>>> k.ntk.shape
(5, 5)
"""

from . import activations, finite, layers, reference, training
from .dynamics import GradientFlow, ensemble_predict, loss_bound, loss_curve, max_learning_rate
from .likelihood import HyperparameterFit, fit_hyperparameters, hyper_gradients, log_marginal_likelihood
from .network import FullyConnected, Kernels
from .regression import KernelRegression
from .serial import Serial, serial
from .spectral import condition_number, eigsh, lambda_max, lambda_min, spectrum

__version__ = "0.1.0"

__all__ = [
    "FullyConnected",
    "GradientFlow",
    "HyperparameterFit",
    "KernelRegression",
    "Kernels",
    "Serial",
    "__version__",
    "activations",
    "condition_number",
    "eigsh",
    "ensemble_predict",
    "finite",
    "fit_hyperparameters",
    "hyper_gradients",
    "lambda_max",
    "lambda_min",
    "layers",
    "log_marginal_likelihood",
    "loss_bound",
    "loss_curve",
    "max_learning_rate",
    "reference",
    "serial",
    "spectrum",
    "training",
]
