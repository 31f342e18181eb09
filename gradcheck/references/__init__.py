"""Trusted gradients: finite differences (numeric), JAX autodiff (jax), SymPy (sympy).

Each reference module exposes a function `(objective, selection, ...) -> ReferenceGradient`;
`selection[k]` is an int array of flat indices of leaf k to compute. jax and sympy are
imported only by their own modules, and only when those run.
"""

from __future__ import annotations

#: Every reference name, most accurate first (the order triangulation prefers).
REFERENCE_NAMES = ("sympy", "jax", "numeric")
