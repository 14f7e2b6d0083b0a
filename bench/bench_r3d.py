"""Training speed of the 3D r3d_18 on this machine's CPU: what each setting buys, against plain torchvision.

The peer is torchvision's ``r3d_18`` as a user would run it on these maps:
float32, the default memory format, a one-channel volume repeated on R, G, B
(``(N, 3, 45, 54, 45)``). rsnflow's ``R3D18`` is the same architecture with a
one-channel stem (the three kernels summed: same outputs, a third of the
stem's work). Each variant runs the same batches (forward, loss, backward,
SGD step) in this process, one after the other; reported: the median seconds
per step over ``--steps`` steps after ``--warmup``, and maps/s, and the ratio
to the peer.

Variants: the channels-last 3D memory format; bfloat16 autocast (the CPU's
AMX/AVX-512 BF16 units, where it has them: ``lscpu`` flags are printed); both.
Usage::

    python bench/bench_r3d.py [--batch 8] [--steps 5] [--warmup 2] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torchvision.models.video import r3d_18

from rsnflow.models.cnn import R3D18
from rsnflow.space import MNI4_SHAPE


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line), "?")
    flags = {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} & set(out.split())
    return f"{name} ({', '.join(sorted(flags)) or 'no AVX2'})"


@contextlib.contextmanager
def _autocast(bf16: bool) -> Iterator[None]:
    if bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def _step_time(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, steps: int, warmup: int
) -> float:
    """Median seconds of one SGD step (forward, loss, backward, update)."""
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    net.train()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with _autocast(bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _variants(n_classes: int) -> dict[str, tuple[Callable[[], nn.Module], bool, bool, int]]:
    """name -> (network factory, channels_last_3d, bf16, input channels)."""

    def peer() -> nn.Module:
        return r3d_18(weights=None, num_classes=n_classes)

    def ours() -> nn.Module:
        return R3D18(n_classes)

    return {
        "torchvision r3d_18, fp32, 3 channels (peer)": (peer, False, False, 3),
        "R3D18 one-channel stem, fp32": (ours, False, False, 1),
        "R3D18, fp32, channels-last 3D": (ours, True, False, 1),
        "R3D18, bf16 autocast": (ours, False, True, 1),
        "R3D18, bf16 autocast, channels-last 3D": (ours, True, True, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", default=None, help="substring: run only the variants whose name has it")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_classes = 58
    vol = torch.randn(args.batch, 1, *MNI4_SHAPE)
    y = torch.randint(0, n_classes, (args.batch,))
    print(f"CPU: {_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}")
    print(f"{'variant':44s} {'s/step':>8s} {'maps/s':>8s} {'x peer':>7s}")
    peer_time = None
    for name, (factory, channels_last, bf16, channels) in _variants(n_classes).items():
        if args.only and args.only not in name and "peer" not in name:
            continue
        torch.manual_seed(0)
        net = factory()
        x = vol.expand(-1, channels, -1, -1, -1).contiguous()
        if channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        seconds = _step_time(net, x, y, bf16, args.steps, args.warmup)
        peer_time = peer_time or seconds
        print(f"{name:44s} {seconds:8.2f} {args.batch / seconds:8.2f} {peer_time / seconds:7.2f}", flush=True)


if __name__ == "__main__":
    main()
