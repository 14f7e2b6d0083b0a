"""The paper's MLP on the 45x54x45 map: three hidden layers of 200."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from rsnflow.config import TrainConfig, default_section
from rsnflow.space import MNI4_SHAPE

#: The paper's MLP (``train.mlp_hidden``, ``train.mlp_dropout`` of defaults.yaml).
_TRAIN = default_section(TrainConfig)

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected classifier of volumes ``(N, 1, 45, 54, 45)``.

    With ``mask`` (the training dataset's group mask) the first layer reads
    only the voxels inside it (26,485 of 109,350 on the demo cohort). Maps are
    z-scored inside that mask and zero outside it (``RSNClassifier``), so a
    weight on an outside voxel would only ever multiply zero: the masked layer
    computes the same function with a quarter of the arithmetic. Without a
    mask the whole grid is flattened. ReLU after each hidden layer and dropout
    after the second, as in the paper.

    Parameters
    ----------
    n_classes : int
        Number of output logits.
    hidden : sequence of int, default=(200, 200, 200)
        Widths of the hidden layers (default: ``train.mlp_hidden`` of defaults.yaml).
    dropout : float, default=0.66
        Dropout probability after the second hidden layer (default: ``train.mlp_dropout``).
    mask : ndarray of bool or None, default=None
        ``(45, 54, 45)`` voxels the first layer reads; ``None``: the whole grid.
    """

    inputs: torch.Tensor | None  # buffer: the grid indices of the first layer's inputs

    def __init__(
        self,
        n_classes: int,
        hidden: Sequence[int] = tuple(_TRAIN.mlp_hidden),
        dropout: float = _TRAIN.mlp_dropout,
        mask: NDArray[np.bool_] | None = None,
    ) -> None:
        super().__init__()
        n_in = MNI4_SHAPE[0] * MNI4_SHAPE[1] * MNI4_SHAPE[2]
        layers: list[nn.Module] = []
        linears: list[nn.Linear] = []
        for i, width in enumerate(hidden):
            linears.append(nn.Linear(n_in, width))
            layers += [linears[-1], nn.ReLU(inplace=True)]
            if i == 1:
                layers.append(nn.Dropout(dropout))
            n_in = width
        layers.append(nn.Linear(n_in, n_classes))
        if mask is None:
            self.register_buffer("inputs", None)
        else:
            # Initialised as the whole-grid layer, then its mask columns kept: the same
            # seed gives the same network as the paper's MLP, weights and training alike.
            flat = torch.as_tensor(np.flatnonzero(np.asarray(mask, dtype=bool).ravel()), dtype=torch.long)
            full = linears[0] if linears else cast(nn.Linear, layers[0])
            first = nn.Linear(len(flat), full.out_features)
            with torch.no_grad():
                first.weight.copy_(full.weight[:, flat])
                first.bias.copy_(full.bias)
            layers[0] = first
            self.register_buffer("inputs", flat)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of volumes.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 1, 45, 54, 45)`` volumes (any shape that flattens to the grid per sample).

        Returns
        -------
        torch.Tensor
            ``(N, n_classes)`` logits.
        """
        x = torch.flatten(x, 1)
        if self.inputs is not None:
            x = x.index_select(1, self.inputs)
        return self.layers(x)
