"""Training and inference speed of the three classifiers on this machine's device.

One SGD step (forward, weighted cross-entropy, backward, update) and one
inference pass per batch, after two warm-up steps; medians of ``--repeats``.
The MLP is timed twice: reading the voxels of the group mask (rsnflow's) and
reading the whole 45x54x45 grid (the paper's), which compute the same function
on maps that are zero outside the mask. Usage::

    python bench/bench_models.py [--repeats 7] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from rsnflow.dataset.views import rgb_projections
from rsnflow.models import build_network
from rsnflow.resample import pick_device
from rsnflow.space import MNI4_SHAPE, load_brain_mask


def _median_seconds(step, repeats: int, device: torch.device) -> float:
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(net: nn.Module, x: torch.Tensor, repeats: int, device: torch.device) -> tuple[float, float]:
    """(train maps/s, inference maps/s) for batches like ``x``."""
    net = net.to(device)
    x = x.to(device)
    y = torch.randint(0, 58, (len(x),), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss(weight=torch.ones(58, device=device))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    def infer_step() -> None:
        with torch.inference_mode():
            net(x)

    net.train()
    t_train = _median_seconds(train_step, repeats, device)
    net.eval()
    t_infer = _median_seconds(infer_step, repeats, device)
    return len(x) / t_train, len(x) / t_infer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    mask = np.asarray(load_brain_mask().dataobj) > 0
    vol = torch.randn(32, 1, *MNI4_SHAPE) * torch.from_numpy(mask)
    print(f"device {device}, torch threads {torch.get_num_threads()}, mask {int(mask.sum())} voxels")
    print(f"{'model':28s} {'batch':>5s} {'train maps/s':>13s} {'infer maps/s':>13s}")
    cases = [
        ("MLP, group-mask input", build_network("mlp", 58, mask=mask), vol),
        ("MLP, whole-grid input", build_network("mlp", 58), vol),
        ("ResNet-50 2.5D (64x64)", build_network("resnet2p5d", 58), rgb_projections(vol[:16, 0], 64)),
        ("r3d_18 (45x54x45)", build_network("r3d18", 58), vol[:8] if device.type == "cpu" else vol),
    ]
    for name, net, x in cases:
        train, infer = speed(net, x, args.repeats, device)
        print(f"{name:28s} {len(x):5d} {train:13.1f} {infer:13.1f}", flush=True)


if __name__ == "__main__":
    main()
