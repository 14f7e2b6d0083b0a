from __future__ import annotations

import numpy as np

from rsnflow.simulate.subject import _drawn_like


def test_noise_draws_do_not_depend_on_the_run_layout() -> None:
    """The simulator's column-major runs get the same normal draws, voxel for voxel, as row-major ones."""
    shape = (9, 4, 3, 5)  # a first axis that the slabs cut unevenly
    expected = np.random.default_rng(3).standard_normal((2, *shape), dtype=np.float32)
    for order in ("C", "F"):
        bold = np.zeros(shape, dtype=np.float32, order=order)
        rng = np.random.default_rng(3)
        first = _drawn_like(bold, rng)
        np.testing.assert_array_equal(first, expected[0])
        assert first.flags[f"{order}_CONTIGUOUS"]
        again = _drawn_like(bold, rng, out=first)  # refilled in place, the stream continued
        assert again is first
        np.testing.assert_array_equal(again, expected[1])
