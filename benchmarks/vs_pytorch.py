"""Our train step against a plain PyTorch FixMatch step: same model, images and batch.

Run: ``python benchmarks/vs_pytorch.py [--torch_python PATH]``, about 4 minutes
on 2 CPU cores. PyTorch is a benchmark-only dependency that lives in its own
virtual environment (``python3 -m venv /tmp/torch && /tmp/torch/bin/pip
install "torch==2.13.0+cpu"``, or PyTorch's CPU wheel for your platform);
pass that environment's python with ``--torch_python`` or
``MUSCLE_JAX_TORCH_PYTHON``. Without one, our two steps are still measured
and the peer's side says it was skipped.

For each workload (WRN-28-2 at CIFAR size, B = 8, mu = 7; the three-layer
small CNN and the mnist config's six-layer one at MNIST size, B = 64, mu =
7) it compiles our MUSCLE step (FixMatch + MI, EMA and metrics included)
and FixMatch alone, starts the PyTorch peer (`torch_peer.py`) as a worker,
and times them in alternating rounds. Images per step count every view:
B + 2 mu B. The ratio is ours / peer in images/s.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness

from muscle_jax.models import conv

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer.py")


class TorchPeer:
    """The PyTorch step in a worker process, timed over its stdin/stdout."""

    def __init__(self, python: str, model: str, batch_size: int, mu: int):
        self.name = "pytorch_fixmatch"
        self.images_per_step = batch_size * (1 + 2 * mu)
        name, kwargs = harness.model_section(model)  # The same architecture as ours.
        widths = (
            ["--widths", ",".join(str(w) for w in kwargs["widths"])] if "widths" in kwargs else []
        )
        command = [python, PEER, "--model", name, "--batch_size", str(batch_size)]
        self._process = subprocess.Popen(
            [*command, "--mu", str(mu), *widths],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._process.stdout.readline()
        if not ready.startswith("ready "):
            self.close()
            raise RuntimeError(f"the PyTorch peer did not start (it printed {ready!r}).")
        self.info = json.loads(ready[len("ready ") :])

    def run(self, steps: int) -> list[float]:
        self._process.stdin.write(f"run {steps}\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=60)


def find_torch_python(requested: str | None) -> tuple[str | None, str]:
    """A python that can import torch, or None and the reason."""
    candidates = [requested, os.environ.get("MUSCLE_JAX_TORCH_PYTHON"), sys.executable]
    for python in filter(None, candidates):
        if shutil.which(python) is None and not os.path.exists(python):
            continue
        probe = subprocess.run([python, "-c", "import torch"], capture_output=True, check=False)
        if probe.returncode == 0:
            return python, ""
    return None, (
        "PyTorch is not installed here: make a separate venv with "
        '`pip install "torch==2.13.0+cpu"` and pass its python with --torch_python '
        "(or MUSCLE_JAX_TORCH_PYTHON)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="wrn28_2,small_cnn,mnist_cnn")
    parser.add_argument("--torch_python", default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per contender per round")
    parser.add_argument("--batch_scale", type=float, default=1.0, help="scales B (smoke tests)")
    parser.add_argument(
        "--xla_conv_backward",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the MUSCLE step with XLA's own convolution gradients (the old default)",
    )
    args = parser.parse_args()

    torch_python, skip_reason = find_torch_python(args.torch_python)
    print(harness.device_line())
    headline = []
    for workload in args.workloads.split(","):
        model, side, channels, batch_size, mu = harness.WORKLOADS[workload]
        batch_size = max(1, round(batch_size * args.batch_scale))
        dataset = harness.synthetic_dataset(side, channels)
        ours = [
            harness.trainer_step(
                "muscle (fixmatch+mi)",
                harness.step_config(model, batch_size=batch_size, mu=mu, mi=True),
                dataset,
            ),
            harness.trainer_step(
                "fixmatch",
                harness.step_config(model, batch_size=batch_size, mu=mu, mi=False),
                dataset,
            ),
        ]
        if args.xla_conv_backward:
            default = conv.conv_backward()
            conv.set_conv_backward("xla")  # Read when the step is traced, just below.
            ours.append(
                harness.trainer_step(
                    "muscle, xla conv grads",
                    harness.step_config(model, batch_size=batch_size, mu=mu, mi=True),
                    dataset,
                )
            )
            conv.set_conv_backward(default)
        peer = TorchPeer(torch_python, model, batch_size, mu) if torch_python else None
        try:
            contenders = ours + ([peer] if peer else [])
            times = harness.alternate(contenders, rounds=args.rounds, steps=args.steps)
        finally:
            if peer:
                peer.close()
        images = ours[0].images_per_step
        print(f"\n{workload}: {side}x{side}x{channels}, B={batch_size}, mu={mu}, {images} img/step")
        for step in ours:
            print(
                f"  ours {step.name:22s} {harness.spread(times[step.name])}, "
                f"{images / harness.median(times[step.name]):,.1f} img/s "
                f"(compile {step.compile_seconds:.1f} s)"
            )
        if peer is None:
            print(f"  peer: skipped ({skip_reason})")
            headline.append(f"{workload} peer skipped")
            continue
        peer_seconds = harness.median(times[peer.name])
        print(
            f"  peer {peer.name:22s} {harness.spread(times[peer.name])}, "
            f"{images / peer_seconds:,.1f} img/s (torch {peer.info['torch']}, "
            f"{peer.info['threads']} threads, {peer.info['params']:,} params)"
        )
        ratios = {s.name: peer_seconds / harness.median(times[s.name]) for s in ours}
        for name, ratio in ratios.items():
            print(f"  ratio ours/peer, {name}: {ratio:.2f}")
        headline.append(f"{workload} {ratios['muscle (fixmatch+mi)']:.2f}")
    print("\nimages/s ours (MUSCLE, MI on) / PyTorch FixMatch: " + ", ".join(headline))


if __name__ == "__main__":
    main()
