"""Shared setup of the digits examples: the 500 / 500 split, architectures and kernel regression.

The images are the UCI optical digits bundled as ``ntkcore.datasets.load_digits`` (the
copy scikit-learn ships as ``load_digits``: 8 x 8, 1797 images, pixels in [0, 1]); 500
training and 500 test images are drawn without replacement with ``default_rng(SEED)``,
the size of the MNIST subsets of "Convolutional Neural Tangent Kernel" (Table 1).

An architecture is a function ``width -> (finite network, infinite-width architecture)``
so that a CNN (``ntkcore.finite.Network``) can be passed where the MLP is; it carries
``name``, ``kind`` ("MLP" or "CNN"), ``suffix`` (of the files a script writes) and ``shape``
(of one input: 64 pixels, or the 8 x 8 x 1 image).  ``architecture_option`` reads the
scripts' ``--arch mlp | cnn`` flag.
"""

import argparse
import time

import ntkcore
import numpy as np
from ntkcore import finite, layers
from ntkcore.datasets import load_digits

SEED = 0
N_TRAIN = N_TEST = 500
CLASSES = 10


def split(n_train=N_TRAIN, n_test=N_TEST, seed=SEED):
    """(x_train, labels_train, x_test, labels_test): rows of 64 pixels, centred per feature."""
    images, labels = load_digits()
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:n_train], order[n_train : n_train + n_test]
    mean = images[train].mean(axis=0)
    return images[train] - mean, labels[train], images[test] - mean, labels[test]


def mlp(depth, W_std=2**0.5, b_std=0.1, activation="relu"):
    """The dense architecture: ``width -> (finite.MLP, ntkcore.FullyConnected)``, 64 inputs, 10 outputs."""
    arch = ntkcore.FullyConnected(depth, activation, W_std=W_std, b_std=b_std)

    def build(width, seed=0):
        return finite.MLP([64] + [width] * depth + [CLASSES], activation, W_std, b_std, seed=seed), arch

    build.name = f"MLP, {depth} hidden ReLU layers"
    build.kind, build.suffix, build.shape = "MLP", "", (64,)
    return build


def cnn(depth, W_std=2**0.5, b_std=0.1, activation="relu"):
    """The convolutional architecture: ``depth`` x (Conv 3 x 3 SAME, ReLU), GlobalAvgPool, Dense
    readout, on the 8 x 8 x 1 images: ``channels -> (finite.Network, ntkcore.serial)``, 10 outputs."""
    conv = [layers.Conv((3, 3), padding="SAME", W_std=W_std, b_std=b_std), activation]
    arch = ntkcore.serial(*conv * depth, layers.GlobalAvgPool(), layers.Dense(W_std=W_std, b_std=b_std))

    def build(width, seed=0):
        return finite.Network(arch, width, outputs=CLASSES, seed=seed, input_shape=(8, 8, 1)), arch

    build.name = f"CNN, {depth} x (Conv 3x3 SAME, ReLU), GlobalAvgPool, Dense"
    build.kind, build.suffix, build.shape = "CNN", "_cnn", (8, 8, 1)
    return build


def architecture_option(description):
    """The ``--arch`` flag of a digits script: "mlp" (default) or "cnn"."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--arch", choices=("mlp", "cnn"), default="mlp", help="dense (default) or convolutional")
    return parser.parse_args().arch


def inputs(x, architecture):
    """The rows of 64 pixels as the architecture takes them (a view, no copy)."""
    return x.reshape((len(x), *architecture.shape))


def regression_accuracy(k_train, k_test_train, labels_train, labels_test, diag_reg=1e-4):
    """Test accuracy of kernel regression (gradient flow to t = infinity, ntkcore.GradientFlow)
    on one-hot targets minus 1/10, with ridge ``diag_reg * mean(diag)``."""
    targets = np.eye(CLASSES)[labels_train] - 1.0 / CLASSES
    flow = ntkcore.GradientFlow(np.asarray(k_train, np.float64), targets, diag_reg=diag_reg)
    test = flow.predict(np.inf, k_test_train=np.asarray(k_test_train, np.float64)).test
    return float(np.mean(np.argmax(test, axis=-1) == labels_test))


def save_figure(fig, path, begin):
    """Lay out and write ``fig`` to ``path``, then print the script's run time since ``begin``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"run time: {time.perf_counter() - begin:.0f} s")
