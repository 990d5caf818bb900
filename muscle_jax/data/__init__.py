"""The input pipeline's parts; `muscle_jax.input_pipeline` is the public entry point.

Each module has one job: `catalog` (which datasets exist), `sources` (reading
them), `files` (your own image folder or ``.npz``), `types` (the dataset types
the others share; it imports nothing of muscle_jax), `splits` (the labeled
subset), `augment` (weak and strong views), `validation` (bad-data checks),
`streams` (seeded, resumable tf.data streams), `device` (global `jax.Array`s)
and `mini_imagenet` (a TFDS builder). They may import TensorFlow;
`muscle_jax.losses` never imports any of them.
"""
