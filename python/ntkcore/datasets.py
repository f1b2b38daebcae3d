"""Small real datasets bundled with the package, for the demo and the tests."""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_digits"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI optical recognition of handwritten digits data (test part, 1797 images).

    E. Alpaydin and C. Kaynak (1998), UCI Machine Learning Repository,
    https://doi.org/10.24432/C50P49 (CC BY 4.0); the copy scikit-learn ships as
    ``load_digits``.  Each image is 8 x 8 blocks of 4 x 4 pixels counting the "on" pixels
    of a 32 x 32 bitmap.

    Returns
    -------
    images : float64 array, shape (1797, 64)
        Pixel counts scaled to [0, 1] (divided by 16).
    labels : int64 array, shape (1797,)
        The digit 0..9.
    """
    with resources.files(__package__).joinpath("data/optdigits.npz").open("rb") as fh:
        data = np.load(fh)
        images = data["images"].astype(np.float64) / 16.0
        labels = data["labels"].astype(np.int64)
    return images, labels
