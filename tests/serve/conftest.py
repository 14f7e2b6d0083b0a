"""A live ``rsnflow serve`` on 127.0.0.1 (a free port) for the served-model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from rsnflow.layout import derivative_path
from rsnflow.models import load_classifier
from rsnflow.space import SPACE_NAME
from servers import rsnflow_serve


@pytest.fixture(scope="module")
def served_mlp(tiny_mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny MLP served from its directory with small limits (8 MB bodies, 8 maps a request)."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with rsnflow_serve(str(tiny_mlp), log, "--max-request-mb", "8", "--max-batch", "8") as url:
        yield url


@pytest.fixture(scope="module")
def maps(tiny_group, tiny_dataset: Path) -> np.ndarray:
    """Six dual-regression maps of one test-split subject, as a client would send them."""
    import pandas as pd

    index = pd.read_csv(tiny_dataset / "index.tsv", sep="\t", dtype={"subject": str})
    test = index[index["split"] == "test"]
    subject = test["subject"].iloc[0]
    comps = test[test["subject"] == subject]["component"].to_numpy()[:6]
    path = derivative_path(tiny_group["deriv"], subject, "components", desc="dr", space=SPACE_NAME, res=4)
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    return np.moveaxis(data[..., comps], -1, 0).copy()


@pytest.fixture(scope="module")
def expected(tiny_mlp: Path, maps: np.ndarray) -> np.ndarray:
    """Probabilities the saved model gives in process: what the server must answer."""
    model, _ = load_classifier(tiny_mlp)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(maps)), dim=1).numpy()
