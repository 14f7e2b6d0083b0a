"""The paper's MLP: the whole 45x54x45 map flattened, three hidden layers of 200."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsnflow.space import MNI4_SHAPE

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected classifier of volumes ``(N, 1, 45, 54, 45)``.

    The input is the full grid flattened (109,350 values, zeros outside the
    brain), not a masked vector, so that one model serves maps from any
    cohort whatever its group mask. ReLU after each hidden layer and dropout
    after the second, as in the paper.
    """

    def __init__(
        self, n_classes: int, hidden: Sequence[int] = (200, 200, 200), dropout: float = 0.66
    ) -> None:
        super().__init__()
        n_in = MNI4_SHAPE[0] * MNI4_SHAPE[1] * MNI4_SHAPE[2]
        layers: list[nn.Module] = []
        for i, width in enumerate(hidden):
            layers += [nn.Linear(n_in, width), nn.ReLU(inplace=True)]
            if i == 1:
                layers.append(nn.Dropout(dropout))
            n_in = width
        layers.append(nn.Linear(n_in, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.flatten(x, 1))
