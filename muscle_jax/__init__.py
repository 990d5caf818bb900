"""muscle_jax: MUSCLE semi-supervised learning in JAX/Flax.

Importing the package imports nothing heavy: `muscle_jax.losses` needs only
JAX and NumPy, while the trainer modules pull in Flax, TensorFlow and Orbax
when they are imported themselves.
"""

__version__ = "0.3.0"
