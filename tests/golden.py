"""Access to tests/data/golden (neural-tangents float64 values and 50-digit values; see tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import ntkcore
import numpy as np

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def configs() -> dict:
    return json.loads((GOLDEN / "index.json").read_text())["configs"]


def network(name: str) -> ntkcore.FullyConnected:
    cfg = configs()[name]
    return ntkcore.FullyConnected(cfg["depth"], cfg["act"], W_std=cfg["W_std"], b_std=cfg["b_std"] or 0.0)


def inputs() -> dict:
    return dict(np.load(GOLDEN / "inputs.npz"))


def values(name: str) -> dict:
    return dict(np.load(GOLDEN / f"{name}.npz"))


def points(set_name: str):
    """(x1, x2) of a golden set; x2 is None for the symmetric sets A, B, C."""
    data = inputs()
    if set_name == "X":
        return data["Bx1"], data["Bx2"]
    return data[set_name], None


def correlation(x1, x2=None):
    x2 = x1 if x2 is None else x2
    n1 = np.linalg.norm(x1, axis=1)
    n2 = np.linalg.norm(x2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x1 @ x2.T) / np.outer(n1, n2)
