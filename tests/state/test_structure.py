"""The state package stays safe to change: short parameter lists, state in named records."""

from __future__ import annotations

import ast
from pathlib import Path

import riskguard.state

STATE_DIR = Path(riskguard.state.__file__).parent
MAX_PARAMS = 12


def long_signatures(source: str, name: str) -> list[str]:
    """Functions in ``source`` taking more than MAX_PARAMS parameters."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
            n += (a.vararg is not None) + (a.kwarg is not None)
            if n > MAX_PARAMS:
                found.append(f"{name}:{node.lineno} {node.name}() takes {n}")
    return found


def test_no_function_in_the_state_package_takes_more_than_12_parameters() -> None:
    """Kernel state travels in named bundles; a long positional list is how a swapped
    argument of the same dtype once compiled and corrupted state silently."""
    too_long = []
    for path in sorted(STATE_DIR.glob("*.py")):
        too_long += long_signatures(path.read_text(), path.name)
    assert not too_long, "functions with more than 12 parameters:\n" + "\n".join(too_long)


def test_the_check_flags_a_long_parameter_list() -> None:
    src = (
        "def ok(a, b, c, d, e, f, g, h, i, j, k, l): pass\n"
        "def bad(a, b, *c, d, e, f, g, h, i, j, k, n, **m): pass"
    )
    assert long_signatures(src, "x.py") == ["x.py:2 bad() takes 13"]
