"""The two views the classifiers see: the 3D volume and the 2.5D RGB sum-projection image."""

from __future__ import annotations

import torch
from torch.nn import functional

__all__ = ["rgb_projections"]


def rgb_projections(volumes: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Sum projections along the three axes as the R, G, B channels of one image.

    Parameters
    ----------
    volumes
        ``(..., X, Y, Z)`` maps (45x54x45 on the MNI 4 mm grid).
    size
        Side of the square image: each projection (``Y x Z`` for R, the sum
        over x; ``X x Z`` for G, over y; ``X x Y`` for B, over z) is resized to
        ``size x size`` bilinearly, so the three line up as channels.

    Returns
    -------
    torch.Tensor
        ``(..., 3, size, size)`` float32, each channel scaled to 0-255 on its
        own (min to 0, max to 255), as in the paper.
    """
    lead = volumes.shape[:-3]
    v = volumes.reshape(-1, *volumes.shape[-3:]).float()
    channels = []
    for axis in (1, 2, 3):
        proj = v.sum(dim=axis).unsqueeze(1)  # (B, 1, H, W)
        proj = functional.interpolate(proj, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        lo = proj.amin(dim=(1, 2), keepdim=True)
        hi = proj.amax(dim=(1, 2), keepdim=True)
        channels.append((proj - lo) / torch.clamp(hi - lo, min=1e-12) * 255.0)
    return torch.stack(channels, dim=1).reshape(*lead, 3, size, size)
