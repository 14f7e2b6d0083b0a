from __future__ import annotations

import numpy as np

from rsnflow.atlas import node_map
from rsnflow.simulate.anatomy import load_anatomy


def test_node_map_on_the_box_axes_equals_the_direct_sum() -> None:
    """The per-axis evaluation the simulator uses gives the Gaussians of ``atlas.node_map``."""
    anat = load_anatomy()
    rng = np.random.default_rng(0)
    nodes = rng.normal(0.0, 40.0, (7, 3))
    for sigma in (6.0, rng.uniform(3.0, 12.0, 7)):
        fast = anat.node_map(nodes, sigma)
        direct = node_map(anat.xyz, nodes, sigma)
        assert fast.shape == (anat.n_active,) and fast.dtype == np.float32
        # The direct sum expands |p - c|^2 in float32 (cancellation at ~1e-5); the axes are exact.
        np.testing.assert_allclose(fast, direct, atol=1e-4)
    # An isolated node on a grid point peaks at exactly 1 there.
    centre = anat.xyz[anat.n_active // 2].astype(np.float64)
    one = anat.node_map(centre[None], 5.0)
    assert one.argmax() == anat.n_active // 2 and abs(float(one.max()) - 1.0) < 1e-6
