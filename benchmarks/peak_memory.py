"""Peak memory per image of one train step: ours (three kernel gradients) against PyTorch's.

Run: ``python benchmarks/peak_memory.py [--torch_python PY]``, about 10
minutes on 2 CPU cores (``--workloads cifar10`` alone: 2 minutes). PyTorch
comes from its own virtual environment, found as `vs_pytorch.py` finds it
(``--torch_python`` or ``MUSCLE_JAX_TORCH_PYTHON``; without one the peer's
column says it was skipped).

For the model of each shipped config (a model another config already has,
at the same image size, is measured once: svhn's and, on a GPU,
image_folder's are cifar10's WRN-28-2; tiny is the tests'), one training
step (forward, backward and update) on the configs' batch composition, B labeled + mu B unlabeled in
two views, at a batch reduced to fit a small machine, is measured four times,
each in a fresh process so that no peak carries over:

- ``im2col``: our MUSCLE step (FixMatch + MI, EMA and metrics included) with
  the im2col kernel gradient of `muscle_jax/models/conv.py` and its default
  patch budget (`conv.DEFAULT_PATCH_BUDGET_MB`: layers whose patches exceed it
  are computed in batch chunks), the CPU default;
- ``im2col-unchunked``: the same with no budget (every layer's patches at once);
- ``xla``: the same step with XLA's own convolution gradients;
- ``pytorch``: the FixMatch step of `torch_peer.py`, same backbone and images.

Each child reports its peak resident set (the kernel's high-water mark,
VmHWM: imports and compilation included; not ``ru_maxrss``, which in a child
starts from its parent's peak at the exec), its resident set after the
framework's imports, and the peak while it runs ``--steps`` steps (the mark
is reset before them: ``/proc/self/clear_refs``). The per-image figure is
the steps' peak less the imports' baseline, over the images of a step: what
the model, its optimiser, the batch, the compiled program and the step's
transients hold. The ratio is ours / PyTorch's (lower is better; <= 1.0 is
the goal).
"""

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NO_BUDGET_MB = 1e12  # Larger than any layer's patches: one matmul per layer, as before chunking.


@dataclasses.dataclass(frozen=True)
class Workload:
    """A shipped config's model on images of its dataset's size, at a reduced batch."""

    config: str  # configs/NAME.py: its model section is the one measured.
    side: int
    channels: int
    batch_size: int  # B; a step has B * (1 + 2 mu) images.
    mu: int


WORKLOADS = {
    "digits": Workload("digits", 8, 1, 32, 4),  # The config's own batch.
    "mnist": Workload("mnist", 28, 1, 16, 7),
    "cifar10": Workload("cifar10", 32, 3, 16, 7),  # Also svhn's (and image_folder's on a GPU).
    "cifar100": Workload("cifar100", 32, 3, 2, 7),  # WRN-28-8.
    "stl10": Workload("stl10", 96, 3, 2, 7),
    "mini_imagenet": Workload("mini_imagenet", 84, 3, 2, 7),
}

CONTENDERS = ("im2col", "im2col-unchunked", "xla", "pytorch")


def scaled(name: str, batch_scale: float) -> Workload:
    """``WORKLOADS[name]`` with B scaled (at least 1)."""
    workload = WORKLOADS[name]
    return dataclasses.replace(
        workload, batch_size=max(1, round(workload.batch_size * batch_scale))
    )


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


def _reset_peak() -> bool:
    """Sets this process's peak RSS to its current RSS (Linux); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _measure(build, steps: int) -> dict:
    """Runs ``build() -> (step, images, info)``, then ``steps`` timed steps; what the parent prints.

    ``build`` runs the step once (compilation, first-call allocations).
    """
    baseline = _rss_kib("VmRSS")
    step, images, info = build()
    before_steps = _rss_kib("VmHWM")
    resident = _rss_kib("VmRSS")
    reset = _reset_peak()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    steps_peak = _rss_kib("VmHWM")
    return {
        **info,
        "images": images,
        "baseline_mib": baseline / 1024,
        "resident_mib": resident / 1024,
        "steps_peak_mib": steps_peak / 1024,
        "process_peak_mib": max(before_steps, steps_peak) / 1024,
        "steps_peak_exact": reset,
        "step_seconds": statistics.median(times),
    }


def _child_ours(args) -> dict:
    sys.path.insert(0, HERE)
    import harness  # JAX, TensorFlow and muscle_jax: the imports the baseline includes.
    import jax

    from muscle_jax.models import conv

    workload = scaled(args.workload, args.batch_scale)
    dataset = harness.synthetic_dataset(workload.side, workload.channels, num_train=400)
    model = f"config:{workload.config}"

    def build():
        conv.set_conv_backward(args.backward)  # Read when the step is traced, below.
        conv.set_conv_patch_budget(args.budget_mb)
        config = harness.step_config(model, batch_size=workload.batch_size, mu=workload.mu, mi=True)
        compiled = harness.trainer_step("ours", config, dataset)
        params = compiled.state.params
        name, kwargs = harness.model_section(model)
        info = {
            "model": name,
            "model_kwargs": kwargs,
            "params": sum(x.size for x in jax.tree.leaves(params)),
            "compile_seconds": compiled.compile_seconds,
            "framework": f"jax {jax.__version__}",
        }
        return (lambda: compiled.run(1)), compiled.images_per_step, info

    return _measure(build, args.steps)


def _child_pytorch(args) -> dict:
    sys.path.insert(0, HERE)
    import torch
    import torch_peer

    workload = scaled(args.workload, args.batch_scale)
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else None

    def build():
        model, step = torch_peer.make_step(
            args.peer_model, workload.batch_size, workload.mu, widths=widths, side=workload.side
        )
        step()  # First-call allocations: gradients, momentum buffers.
        info = {
            "model": args.peer_model,
            "params": sum(p.numel() for p in model.parameters()),
            "framework": f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        }
        return step, workload.batch_size * (1 + 2 * workload.mu), info

    return _measure(build, args.steps)


def peer_model(name: str, kwargs: dict) -> tuple[str, list[str]] | None:
    """The `torch_peer.py` model (and its arguments) of our model; None where it has none."""
    if name == "small_cnn":
        widths = kwargs.get("widths")
        return "small_cnn", ["--widths", ",".join(map(str, widths))] if widths else []
    if name == "wide_resnet":
        name = f"wrn{kwargs.get('depth', 28)}_{kwargs.get('width', 2)}"
        kwargs = {}
    if name in ("wrn28_2", "wrn28_8") and not kwargs:
        return name, []
    if name == "resnet18" and kwargs.get("stem", "cifar") == "cifar":
        return "resnet18", []
    return None


def _run_child(python: str, arguments: list[str], timeout: float) -> dict:
    """One measurement in a fresh process: its JSON report, or {"error": ...}."""
    completed = subprocess.run(
        [python, os.path.abspath(__file__), "--child", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines or not lines[-1].startswith("{"):
        return {"error": (completed.stderr or completed.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def _row(label: str, result: dict, peer: dict | None) -> str:
    if "error" in result:
        return f"| {label} | failed: {' '.join(result['error'])[:160]} | | | | | | |"
    per_image = (result["steps_peak_mib"] - result["baseline_mib"]) / result["images"]
    ratio = ""
    if peer and "error" not in peer:
        peer_per_image = (peer["steps_peak_mib"] - peer["baseline_mib"]) / peer["images"]
        ratio = f"{per_image / peer_per_image:.2f}"
    return (
        f"| {label} | {result['process_peak_mib']:,.0f} | {result['baseline_mib']:,.0f} | "
        f"{result['resident_mib']:,.0f} | {result['steps_peak_mib']:,.0f} | "
        f"**{per_image:.2f}** | {ratio} | "
        f"{result['step_seconds'] * 1e3:,.0f} |"
    )


def _measure_workload(name, args, contenders, default_budget, torch_python, skip_reason):
    """Measures one workload's contenders, prints its table; returns (ratio text, failures)."""
    workload = scaled(name, args.batch_scale)
    common = ["--workload", name, "--steps", str(args.steps)]
    common += ["--batch_scale", str(args.batch_scale)]
    results = {}
    for contender in contenders:
        if contender == "pytorch":
            continue
        backward, budget = {
            "im2col": ("matmul", default_budget),
            "im2col-unchunked": ("matmul", NO_BUDGET_MB),
            "xla": ("xla", default_budget),
        }[contender]
        arguments = [*common, "--backward", backward, "--budget_mb", repr(budget)]
        results[contender] = _run_child(sys.executable, arguments, args.timeout)
    ours = next((r for r in results.values() if "error" not in r), None)
    peer, peer_note = None, skip_reason
    if "pytorch" in contenders and ours and torch_python:
        spec = peer_model(ours["model"], ours["model_kwargs"])
        if spec is None:
            peer_note = f"torch_peer.py has no {ours['model']} {ours['model_kwargs']}"
        else:
            arguments = [*common, "--peer_model", spec[0], *spec[1]]
            peer = results["pytorch"] = _run_child(torch_python, arguments, args.timeout)
    images = workload.batch_size * (1 + 2 * workload.mu)
    model = f"{ours['model']} {ours['model_kwargs'] or ''}".strip() if ours else "?"
    print(
        f"\n{name}: {model}, {workload.side}x{workload.side}x{workload.channels}, "
        f"B={workload.batch_size}, mu={workload.mu}, {images} img/step"
        + (f", {ours['params']:,} params" if ours else "")
    )
    _print_table(contenders, results, peer, peer_note)
    failures = [(name, label) for label, result in results.items() if "error" in result]
    main_result = results.get(contenders[0], {})
    if peer and "error" not in peer and "error" not in main_result:
        ours_per_image = (main_result["steps_peak_mib"] - main_result["baseline_mib"]) / images
        peer_per_image = (peer["steps_peak_mib"] - peer["baseline_mib"]) / images
        return f"{ours_per_image / peer_per_image:.2f}", failures
    return "no ratio", failures


def _print_table(contenders, results, peer, peer_note) -> None:
    print(
        "| contender | process peak MiB | after imports | before steps | steps' peak | "
        "(peak - imports) / image | / PyTorch | step ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for contender in contenders:
        if contender in results:
            print(_row(contender, results[contender], peer))
        elif contender == "pytorch":
            print(f"| pytorch | skipped: {peer_note} | | | | | | |")
    for label, result in results.items():
        if "error" not in result and not result["steps_peak_exact"]:
            print(f"  ({label}: the peak could not be reset; it includes compilation)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--torch_python", default=None)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement")
    parser.add_argument("--batch_scale", type=float, default=1.0, help="scales B (smoke tests)")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"some of {', '.join(CONTENDERS)}"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    # A child measures one contender: set by the parent, not by hand.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--backward", default="matmul", help=argparse.SUPPRESS)
    parser.add_argument("--budget_mb", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peer_model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--widths", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        measure = _child_pytorch if args.peer_model else _child_ours
        print(json.dumps(measure(args)))
        return

    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    unknown |= set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown:
        parser.error(
            f"unknown {sorted(unknown)}: workloads are {list(WORKLOADS)}, "
            f"contenders {list(CONTENDERS)}"
        )
    contenders = [c for c in CONTENDERS if c in args.contenders.split(",")]
    if contenders in ([], ["pytorch"]):
        parser.error("--contenders needs one of ours: im2col, im2col-unchunked or xla")
    # Imported here, not above: a child of the PyTorch side imports only torch.
    sys.path.insert(0, HERE)
    from vs_pytorch import find_torch_python

    from muscle_jax.models import conv

    torch_python, skip_reason = find_torch_python(args.torch_python)
    default_budget = conv.conv_patch_budget()  # The default, or MUSCLE_JAX_CONV_PATCH_MB's.
    print(
        f"peak RSS of one train step per image, {args.steps} steps per measurement, "
        f"{os.cpu_count()} CPU cores; im2col patch budget {default_budget:g} MiB"
    )
    headline, failures = [], []
    for name in args.workloads.split(","):
        ratio, failed_here = _measure_workload(
            name, args, contenders, default_budget, torch_python, skip_reason
        )
        headline.append(f"{name} {ratio}")
        failures += failed_here
    failed = [f"{name} {label}" for name, label in failures]
    if failed:
        print(f"\nfailed measurements: {', '.join(failed)}")
    print(f"\npeak MiB/image ours ({contenders[0]}) / PyTorch: " + ", ".join(headline))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
