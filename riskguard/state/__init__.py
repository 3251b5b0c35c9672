"""Risk state: interned keys, numpy arrays, numba kernels and their Python reference."""
