"""The type stub _core.pyi declares exactly the compiled functions, with their parameters.

mypy.stubtest (in .ci/lint) sees only that the names exist, since pybind11 functions carry no
inspectable signature; their docstrings do, one line per overload, and this test reads them.
"""

import ast
import re
from pathlib import Path

import ntkcore
import pytest
from ntkcore._native import core

STUB = Path(ntkcore.__file__).with_name("_core.pyi")


def _stub_functions():
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + [
                ast.literal_eval(d) for d in node.args.defaults
            ]
            out[node.name] = [(a.arg, d) for a, d in zip(args, defaults)]
    return out


def _split_top_level(text):
    """Split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _runtime_overloads(name):
    """Each overload's [(parameter, default or None)], from the pybind11 docstring."""
    doc = getattr(core, name).__doc__
    overloads = []
    for match in re.finditer(rf"^(?:\d+\. )?{name}\((.*)\) ->", doc, re.MULTILINE):
        params = []
        for part in _split_top_level(match.group(1)):
            if part.startswith("*"):
                break  # the "(*args, **kwargs)" header of an overloaded function
            head, _, default = part.partition(" = ")
            params.append((head.split(":")[0].strip(), ast.literal_eval(default) if default else None))
        if params or match.group(1) == "":
            overloads.append(params)
    return overloads


def _runtime_functions():
    return sorted(n for n in dir(core) if not n.startswith("_") and callable(getattr(core, n)))


def test_the_stub_declares_every_compiled_function_and_nothing_else():
    assert sorted(_stub_functions()) == _runtime_functions()


@pytest.mark.parametrize("name", _runtime_functions())
def test_parameters_and_defaults_match_every_overload(name):
    declared = _stub_functions()[name]
    overloads = _runtime_overloads(name)
    assert overloads, f"no signature found in the docstring of {name}"
    for params in overloads:
        assert params == declared, (name, params, declared)
