"""Activations every engine test runs over: each family, with nontrivial parameters."""

from ntkcore import activations as act

ACTIVATIONS = [
    act.Relu(),
    act.LeakyRelu(0.2),
    act.ABRelu(-0.5, 2.0),
    act.Abs(),
    act.Identity(),
    act.Sign(),
    act.Erf(),
    act.Erf(1.3, 0.7, 0.2),
    act.SigmoidLike(),
]
