"""scikit-learn estimators and Gaussian-process kernels of infinitely wide networks.

Needs scikit-learn (``pip install "ntkcore[sklearn]"``).

- :class:`NTKRegressor`, :class:`NTKClassifier`: kernel regression with the NTK or the NNGP
  kernel, at the end of training (``t = inf``) or after gradient-flow time ``t`` (docs/math/5-gram-dynamics.md).
- :class:`NTKKernel`, :class:`NNGPKernel`: ``sklearn.gaussian_process.kernels.Kernel``
  subclasses whose hyperparameters are W_std and b_std, for ``GaussianProcessRegressor``.

>>> import numpy as np
>>> from ntkcore.sklearn import NTKRegressor
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((30, 4)), rng.standard_normal(30)
>>> model = NTKRegressor(depth=2, W_std=1.5, b_std=0.1).fit(x, y)
>>> model.predict(x[:3]).shape
(3,)
"""

from __future__ import annotations

import dataclasses

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised by the import test without scikit-learn
    raise ImportError(
        "ntkcore.sklearn needs scikit-learn >= 1.6: pip install 'ntkcore[sklearn]' (the sklearn extra)"
    ) from exc

from . import layers as _layers
from ._validation import choice, real
from .dynamics import GradientFlow, ensemble_predict
from .likelihood import hyper_gradients
from .network import FullyConnected
from .serial import Serial

__all__ = ["NNGPKernel", "NTKClassifier", "NTKKernel", "NTKRegressor"]

_FLAT_DEFAULTS = {"depth": 3, "activation": "relu", "W_std": 1.0, "b_std": 0.0}


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except ValueError:  # arrays: elementwise comparison
        return bool(np.array_equal(a, b))


def _network(estimator):
    """The network an estimator describes: ``network`` when given, else its flat parameters."""
    if estimator.network is None:
        return FullyConnected(
            depth=estimator.depth, activation=estimator.activation, W_std=estimator.W_std, b_std=estimator.b_std
        )
    if not isinstance(estimator.network, (FullyConnected, Serial)):
        raise TypeError(
            f"network must be None, an ntkcore.FullyConnected or an ntkcore.serial network, "
            f"got {type(estimator.network).__name__}"
        )
    changed = [name for name, value in _FLAT_DEFAULTS.items() if not _same(getattr(estimator, name), value)]
    if changed:
        raise ValueError(
            f"{', '.join(changed)} describe a fully-connected network and cannot be combined with network=; "
            "set them on the network itself"
        )
    return estimator.network


class _KernelRegression(BaseEstimator):
    """Fit/predict shared by the regressor and the classifier (targets already numeric)."""

    def __init__(
        self,
        network=None,
        *,
        depth=3,
        activation="relu",
        W_std=1.0,
        b_std=0.0,
        kernel="ntk",
        t=np.inf,
        diag_reg=1e-6,
    ):
        self.network = network
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.kernel = kernel
        self.t = t
        self.diag_reg = diag_reg

    def _fit_targets(self, X, targets):
        net = _network(self)
        choice(self.kernel, "kernel", ("ntk", "nngp"))
        real(self.t, "t", minimum=0.0, infinite=True)
        diag_reg = real(self.diag_reg, "diag_reg", minimum=0.0)
        self.network_ = net
        self.X_train_ = X
        self.y_train_ = targets
        gram = getattr(net.kernels(X), self.kernel)
        self.flow_ = GradientFlow(gram, targets, diag_reg=diag_reg)
        return self

    def _mean(self, X):
        k_test_train = getattr(self.network_.kernels(X, self.X_train_), self.kernel)
        return self.flow_.predict(float(self.t), k_test_train).test


class NTKRegressor(RegressorMixin, _KernelRegression):
    """Kernel regression with the NTK or NNGP kernel of an infinitely wide network.

    The prediction is the mean output of an infinite ensemble of infinitely wide networks
    (zero at initialization) trained by gradient flow on the squared loss for time ``t``
    (``ntkcore.GradientFlow``; ``t = inf``: kernel regression).  With ``kernel="nngp"``
    only the last layer is trained, and ``t = inf`` is the NNGP posterior mean.

    Parameters
    ----------
    network : ntkcore.FullyConnected or ntkcore.serial network, optional
        The architecture.  ``None`` (default) builds ``FullyConnected(depth, activation,
        W_std, b_std)`` from the flat parameters, which must then stay at their defaults
        otherwise (ValueError).
    depth : int >= 0
        Hidden layers of the fully-connected network.
    activation : str or ntkcore.activations.Activation
    W_std, b_std : float >= 0
        Weight and bias standard deviations of every dense layer.
    kernel : "ntk" or "nngp"
    t : float >= 0
        Training time in units of 1 / learning rate (``numpy.inf``: the end of training).
    diag_reg : float >= 0
        Ridge ``diag_reg * mean(diag K)`` added to the training kernel (``GradientFlow``).

    Attributes
    ----------
    network_ : FullyConnected or Serial
        The network used.
    X_train_ : ndarray of shape (N, d) (or the network's input shape)
        The training inputs.
    y_train_ : ndarray of shape (N,) or (N, k)
        The training targets.
    flow_ : ntkcore.GradientFlow
        Gradient flow on the training kernel.
    n_features_in_ : int
        Features per training row.
    """

    def fit(self, X, y):
        """Fit to X (N, d) and targets y (N,) or (N, k) (k outputs share the kernel)."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64, allow_nd=True)
        return self._fit_targets(X, y)

    def predict(self, X, return_std=False, return_cov=False):
        """Predicted targets of X (M, d).

        Parameters
        ----------
        X : array_like, shape (M, d)
        return_std, return_cov : bool
            Also return the standard deviation (M,) or covariance (M, M) of the ensemble's
            output (NNGP: the GP posterior; NTK: the infinite ensemble of docs/math/5-gram-dynamics.md, computed
            by ``ntkcore.ensemble_predict``), shared by the k outputs: for 2-D targets they are
            repeated to shape (M, k) and (M, M, k), as ``GaussianProcessRegressor`` does.
            At most one of the two.

        Returns
        -------
        mean : ndarray, shape (M,) or (M, k)
        std or cov : ndarray, when asked for
        """
        check_is_fitted(self)
        if return_std and return_cov:
            raise ValueError("at most one of return_std and return_cov can be True")
        X = validate_data(self, X, reset=False, dtype=np.float64, allow_nd=True)
        mean = self._mean(X)
        if not (return_std or return_cov):
            return mean
        cov = ensemble_predict(
            self.network_,
            self.X_train_,
            self.y_train_,
            X,
            float(self.t),
            kernel=self.kernel,
            diag_reg=float(self.diag_reg),
        ).covariance
        extra = self.y_train_.shape[1:]
        if return_std:
            std = np.sqrt(np.maximum(np.diagonal(cov), 0.0))
            return mean, (np.repeat(std[:, None], extra[0], axis=1) if extra else std)
        return mean, (np.repeat(cov[:, :, None], extra[0], axis=2) if extra else cov)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class NTKClassifier(ClassifierMixin, _KernelRegression):
    """Classification by kernel regression on one-hot targets with the NTK or NNGP kernel.

    Class c of k is encoded as the centred one-hot vector ``e_c - 1/k`` (entries ``1 - 1/k``
    and ``-1/k``, summing to 0, so that points far from the data, where the regression tends
    to the zero prior mean, get no preference); the regression of NTKRegressor fits these
    targets and :meth:`predict` returns the class of the largest output.  Parameters as
    :class:`NTKRegressor`.

    Attributes
    ----------
    classes_ : ndarray of shape (k,)
        The class labels.
    network_, X_train_, flow_, n_features_in_
        As :class:`NTKRegressor`.
    y_train_ : ndarray of shape (N, k)
        The encoded targets.
    """

    def fit(self, X, y):
        """Fit to X (N, d) and class labels y (N,)."""
        X, y = validate_data(self, X, y, dtype=np.float64, allow_nd=True)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        k = len(self.classes_)
        targets = np.full((len(y), k), -1.0 / k)
        targets[np.arange(len(y)), encoder.transform(y)] += 1.0
        return self._fit_targets(X, targets)

    def decision_function(self, X):
        """Regression outputs, (M, k); for two classes the margin output 1 - output 0, (M,)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, allow_nd=True)
        scores = self._mean(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):
        """The class of the largest regression output for each row of X (M, d)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, allow_nd=True)
        return self.classes_[np.argmax(self._mean(X), axis=1)]


# --- Gaussian-process kernels ----------------------------------------------------------------


def _with_scales(network, W_std: float, b_std: float):
    """``network`` with W_std and b_std on every dense (and convolutional) layer."""
    if isinstance(network, FullyConnected):
        return dataclasses.replace(network, W_std=W_std, b_std=b_std)
    if isinstance(network, Serial):
        return Serial(
            tuple(
                dataclasses.replace(v, W_std=W_std, b_std=b_std) if isinstance(v, (_layers.Dense, _layers.Conv)) else v
                for v in network.layers
            )
        )
    raise TypeError(
        f"network must be an ntkcore.FullyConnected or an ntkcore.serial network, got {type(network).__name__}"
    )


class _NetworkKernel(Kernel):
    _which = "ntk"

    def __init__(self, network, W_std=1.0, b_std=0.0, W_std_bounds=(1e-2, 1e2), b_std_bounds=(1e-4, 1e2)):
        self.network = network
        self.W_std = W_std
        self.b_std = b_std
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds

    @property
    def hyperparameter_W_std(self):
        return Hyperparameter("W_std", "numeric", self.W_std_bounds)

    @property
    def hyperparameter_b_std(self):
        # log(0) has no gradient step: a zero b_std stays fixed (give b_std > 0 to tune it).
        return Hyperparameter("b_std", "numeric", "fixed" if self.b_std == 0 else self.b_std_bounds)

    def _net(self):
        return _with_scales(self.network, self.W_std, self.b_std)

    def __call__(self, X, Y=None, eval_gradient=False):
        """The kernel k(X, Y), (N, M), and with eval_gradient its gradient (N, N, n_free).

        The gradient is with respect to the free entries of ``theta`` (log W_std, log b_std),
        exact (forward-mode differentiation in the core, ``ntkcore.hyper_gradients``); only for
        ``Y=None``.
        """
        X = np.asarray(X, dtype=np.float64)
        if not eval_gradient:
            return getattr(self._net().kernels(X, None if Y is None else np.asarray(Y, dtype=np.float64)), self._which)
        if Y is not None:
            raise ValueError("the gradient can only be evaluated when Y is None")
        free = [not h.fixed for h in (self.hyperparameter_W_std, self.hyperparameter_b_std)]
        if not any(free):
            return getattr(self._net().kernels(X), self._which), np.empty((X.shape[0], X.shape[0], 0))
        value, gradient = hyper_gradients(self._net(), X, kernel=self._which)
        return value, (gradient if all(free) else gradient[:, :, free])

    def diag(self, X):
        """k(x, x) for each row of X, shape (N,), in O(N)."""
        return getattr(self._net().diagonal(np.asarray(X, dtype=np.float64)), self._which)

    def is_stationary(self):
        return False

    @property
    def requires_vector_input(self):
        return True

    def __repr__(self):
        return f"{type(self).__name__}(network={self.network!r}, W_std={self.W_std:.3g}, b_std={self.b_std:.3g})"


class NTKKernel(_NetworkKernel):
    """The neural tangent kernel Theta of ``network`` as a scikit-learn GP kernel.

    Parameters
    ----------
    network : ntkcore.FullyConnected or ntkcore.serial network
        The architecture; its W_std and b_std are replaced by these on every dense (and
        convolutional) layer.
    W_std, b_std : float >= 0
        Hyperparameters (``theta`` holds their logarithms).  A zero b_std is fixed.
    W_std_bounds, b_std_bounds : pair of floats > 0, or "fixed"
        Bounds of the hyperparameters for the optimizer of ``GaussianProcessRegressor``.
    """

    _which = "ntk"


class NNGPKernel(_NetworkKernel):
    """The NNGP kernel K of ``network`` as a scikit-learn GP kernel; parameters as :class:`NTKKernel`."""

    _which = "nngp"
