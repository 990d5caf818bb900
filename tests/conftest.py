"""Test-wide setup: 8 simulated CPU devices, quiet TensorFlow, no GPU for TF.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before
anything imports jax. Tests that want one device build a one-device mesh.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
