"""The SymPy reference (`reference`: exact derivatives of the learner's loss re-run on symbols)
and the numpy-compatible namespace it runs on (`symnp`). Only this package imports sympy."""
