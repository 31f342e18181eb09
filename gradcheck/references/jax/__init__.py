"""The JAX reference (`reference`: jax.grad of the learner's loss re-run under jax.numpy) and
blame's exact adjoints of the loss's intermediates (`adjoints`). Only this package imports jax."""
