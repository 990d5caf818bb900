"""How long Ctrl-C takes: seconds from a SIGINT to the exit of ``python -m muscle_jax.main``.

Run: ``python benchmarks/stop_latency.py [--model wrn28_2]``, about 3
minutes on 2 CPU cores. A 32x32 image folder made from scikit-learn's digits
is trained with `configs/image_folder.py`; ``--delay`` seconds after the
progress line of step ``--log_every`` the run gets a SIGINT, as Ctrl-C sends
it, and the script times the process's exit. A stop should cost the step
running, the one queued behind it, the checkpoint and the exit
(docs/development.md, "Stopping"); the headline says at which step it
stopped, beside the step the progress line named.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_image_folder(root: str, count: int) -> None:
    """``count`` digits, upscaled to 32x32 RGB PNGs, by class; one in six for test."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index in range(count):
        split = "test" if index % 6 == 0 else "train"
        folder = os.path.join(root, split, f"class_{digits.target[index]}")
        os.makedirs(folder, exist_ok=True)
        image = (digits.images[index] / 16 * 255).astype(np.uint8)[..., None]
        image = tf.image.resize(np.repeat(image, 3, -1), (32, 32), method="bilinear")
        png = tf.io.encode_png(tf.cast(tf.round(image), tf.uint8))
        tf.io.write_file(os.path.join(folder, f"{index}.png"), png)


def time_one_stop(folder: str, workdir: str, args) -> tuple[float, int]:
    """(seconds from the SIGINT to the exit, the step the run stopped at)."""
    command = [
        sys.executable,
        "-m",
        "muscle_jax.main",
        "--config=configs/image_folder.py",
        f"--config.data.path={folder}",
        f"--workdir={workdir}",
        f"--config.model.name={args.model}",
        f"--config.data.batch_size={args.batch_size}",
        f"--config.data.unlabeled_ratio={args.unlabeled_ratio}",
        f"--config.log_every_steps={args.log_every}",
        "--config.total_steps=100000",
        "--config.eval_every_steps=100000",
        "--config.checkpoint_every_steps=100000",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if f"step {args.log_every}/" in line:
            break
    else:
        raise RuntimeError("the run ended before its first progress line:\n" + "".join(output))
    time.sleep(args.delay)
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    output.append(process.stdout.read())
    process.wait()
    seconds = time.perf_counter() - sent
    stopped = re.search(r"Stopped by SIGINT at step (\d+)", "".join(output))
    if process.returncode != 0 or stopped is None:
        raise RuntimeError("the run did not stop cleanly:\n" + "".join(output)[-3000:])
    return seconds, int(stopped.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn28_2")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--unlabeled_ratio", type=int, default=2)
    parser.add_argument("--log_every", type=int, default=20, help="the first progress line")
    parser.add_argument("--delay", type=float, default=15.0, help="seconds after it: SIGINT")
    parser.add_argument("--images", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stop_latency_") as root:
        folder = os.path.join(root, "digits32")
        make_image_folder(folder, args.images)
        seconds, step = time_one_stop(folder, os.path.join(root, "run"), args)
    print(
        f"seconds from SIGINT to exit ({args.model}, batch {args.batch_size}, mu "
        f"{args.unlabeled_ratio}): {seconds:.1f}, stopped at step {step} "
        f"({args.delay:g} s after the progress line of step {args.log_every})"
    )


if __name__ == "__main__":
    main()
