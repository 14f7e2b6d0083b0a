"""The two convolutional classifiers: 2.5D ResNet-50 and 3D r3d_18 (torchvision, random init)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.video import r3d_18

__all__ = ["R3D18", "ResNet2p5D"]

#: ImageNet channel statistics on the 0-255 scale, so that ImageNet-pretrained
#: ResNet-50 weights (from a local file) see inputs as they were trained on.
_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class ResNet2p5D(nn.Module):
    """torchvision ResNet-50 on the RGB sum-projection image ``(N, 3, S, S)`` scaled 0-255.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    """

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.net = resnet50(weights=None, num_classes=n_classes)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of projection images, normalised with the ImageNet channel statistics.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 3, S, S)`` images scaled 0-255.

        Returns
        -------
        torch.Tensor
            ``(N, n_classes)`` logits.
        """
        return self.net((x - self.mean) / self.std)


class R3D18(nn.Module):
    """torchvision video ``r3d_18`` on one-channel volumes ``(N, 1, 45, 54, 45)``.

    The stem's RGB convolution becomes a one-channel one whose kernel is the
    sum of the three input-channel kernels (what a grey clip repeated on
    R, G, B would see), so Kinetics-pretrained weights carry over.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.net = r3d_18(weights=None, num_classes=n_classes)
        self.net.stem[0] = one_channel_conv(self.net.stem[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of volumes.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 1, 45, 54, 45)`` volumes.

        Returns
        -------
        torch.Tensor
            ``(N, n_classes)`` logits.
        """
        return self.net(x)


def one_channel_conv(conv: nn.Conv3d) -> nn.Conv3d:
    """A copy of ``conv`` taking one input channel, its kernel summed over the input channels."""
    size = cast(tuple[int, int, int], conv.kernel_size)
    stride = cast(tuple[int, int, int], conv.stride)
    padding = cast(tuple[int, int, int], conv.padding)
    new = nn.Conv3d(1, conv.out_channels, size, stride, padding, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new
