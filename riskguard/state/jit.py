"""How the kernels' helpers are jitted: like the kernels, minus what only Python needs.

The kernels that Python calls (``apply_batch``, ``tick``, ``settle`` and the table
copies) are ``@njit(cache=True, _nrt=False)``. Every other jitted function is only
ever called from jitted code, so :data:`helper` also skips the CPython and C
wrappers numba would build, link and optimise for each of them: a third of the
first-run compile (``bench/startup.py``), and the compiled code the kernels run is
the same. Calling a helper from Python raises ``TypeError``.
"""

from __future__ import annotations

from numba import njit

helper = njit(cache=True, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)
"""Decorator for jitted functions called only from other jitted functions."""

inlined = njit(
    cache=True, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True, inline="always"
)
"""Like :data:`helper`, and inlined into its callers at numba IR level: for the few small
helpers of the hot loops (a holder walk visits every holder of a symbol) that LLVM left
as calls, each of which passed the whole ``State`` bundle (hundreds of machine words)."""
