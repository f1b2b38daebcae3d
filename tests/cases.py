"""Activations every engine test runs over: each family, with nontrivial parameters.

RectifiedMonomial of order n >= 2 is left out: its variances grow like q**n per layer and
overflow at the depths and scales these suites draw; test_closed_forms covers it."""

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
    act.Sin(),
    act.Sin(1.3, 0.7, 0.4),
    act.Cos(0.8, 1.2, 0.1),
    act.Gelu(),
    act.RectifiedMonomial(0),
]
