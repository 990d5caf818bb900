"""The PyTorch peer: a FixMatch train step written the way PyTorch SSL codebases write it.

USB, TorchSSL and FixMatch-pytorch all run one forward pass over
cat(labeled, weak, strong), take cross-entropy on the labeled logits plus a
confidence-masked pseudo-label cross-entropy on the strong view, and step
SGD with Nesterov momentum and weight decay. This file does the same for the
backbones of the shipped configs: WRN-28-2 and WRN-28-8 on 32x32x3 (BatchNorm
momentum 0.001 in PyTorch's convention, leaky ReLU 0.1, pre-activation
blocks), the small CNN (3x3 convs 32/64/128 or ``--widths``, strides 1/2/2...,
BatchNorm, leaky ReLU, global pooling, linear) on 28x28x1, and ResNet-18
(post-activation BasicBlocks, CIFAR stem: a 3x3 stride-1 conv, no max pool) on
84x84x3. ``--side`` sets another image size (STL-10's 96, digits' 8).

It runs as a worker so that the two frameworks live in separate virtual
environments and are measured alternately in one run:

    python benchmarks/torch_peer.py --model wrn28_2 --batch_size 8 --mu 7

prints ``ready {...}`` once built and warmed up, then answers each stdin line
``run N`` with a JSON list of N step times in seconds. It imports only torch.
"""

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def _leaky(x):
    return F.leaky_relu(x, 0.1)


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.001)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.001)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        projects = cin != cout or stride != 1
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if projects else None

    def forward(self, x):
        activated = _leaky(self.bn1(x))
        out = self.conv2(_leaky(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, width: int = 2, num_classes: int = 10):
        super().__init__()
        blocks_per_group = (depth - 4) // 6
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks, channels = [], 16
        for group_width, stride in zip((16 * width, 32 * width, 64 * width), (1, 2, 2)):
            for index in range(blocks_per_group):
                blocks.append(PreActBlock(channels, group_width, stride if index == 0 else 1))
                channels = group_width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels, momentum=0.001)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = _leaky(self.bn(self.blocks(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, widths=(32, 64, 128), num_classes: int = 10):
        super().__init__()
        layers, channels = [], in_channels
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers += [
                nn.Conv2d(channels, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width, momentum=0.01),
                nn.LeakyReLU(0.1),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if cin != cout or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem, as muscle_jax's ``resnet18`` (stem="cifar")."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64))
        blocks, channels = [], 64
        for stage, width in enumerate((64, 128, 256, 512)):
            for index in range(2):
                blocks.append(BasicBlock(channels, width, 2 if index == 0 and stage > 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


# name -> (constructor, image channels, image side)
MODELS = {
    "wrn28_2": (WideResNet, 3, 32),
    "wrn28_8": (lambda: WideResNet(width=8), 3, 32),
    "small_cnn": (SmallCNN, 1, 28),
    "resnet18": (ResNet18, 3, 84),
}


def make_step(
    model_name: str,
    batch_size: int,
    mu: int,
    threshold: float = 0.95,
    widths=None,
    side: int | None = None,
):
    torch.manual_seed(0)
    build, channels, default_side = MODELS[model_name]
    side = side or default_side
    model = build() if widths is None else build(widths=widths)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.03, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    labeled = torch.randn(batch_size, channels, side, side)
    labels = torch.randint(0, 10, (batch_size,))
    weak = torch.randn(batch_size * mu, channels, side, side)
    strong = torch.randn(batch_size * mu, channels, side, side)

    def step():
        logits = model(torch.cat([labeled, weak, strong]))
        n, m = batch_size, batch_size * mu
        logits_l, logits_w, logits_s = logits[:n], logits[n : n + m], logits[n + m :]
        confidence, pseudo = torch.softmax(logits_w.detach(), dim=-1).max(dim=-1)
        unlabeled = F.cross_entropy(logits_s, pseudo, reduction="none")
        loss = F.cross_entropy(logits_l, labels) + (unlabeled * (confidence >= threshold)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--mu", type=int, required=True)
    parser.add_argument("--widths", default="", help="the small CNN's conv widths, e.g. 32,64")
    parser.add_argument("--side", type=int, default=None, help="image side (default: the model's)")
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else None
    model, step = make_step(args.model, args.batch_size, args.mu, widths=widths, side=args.side)
    step()  # Warm-up: first-call allocations.
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
    }
    print("ready " + json.dumps(info), flush=True)
    for line in sys.stdin:
        command, _, count = line.strip().partition(" ")
        if command != "run":
            break
        times = []
        for _ in range(int(count)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
