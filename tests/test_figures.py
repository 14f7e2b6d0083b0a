"""Figures a person reads: signed maps (red positive, blue negative), a colorbar, tables linked to them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from rsnflow.figures import component_montage, montage_anchor
from rsnflow.report import Report
from rsnflow.space import MNI4_AFFINE, MNI4_SHAPE


def _colours(png: Path) -> tuple[int, int]:
    rgb = imread(png)[..., :3]
    red = (rgb[..., 0] > 0.6) & (rgb[..., 2] < 0.35)
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.35)
    return int(red.sum()), int(blue.sum())


def test_signed_maps_show_both_signs_and_the_peak_in_mm(tmp_path: Path) -> None:
    maps = np.zeros((*MNI4_SHAPE, 2), np.float32)
    maps[20:24, 30:34, 20:24, 0] = 8.0  # a positive blob ...
    maps[26:29, 30:34, 20:24, 0] = -6.0  # ... beside a negative one, in the same slices
    maps[10:13, 10:13, 10:13, 1] = 5.0
    template = np.ones(MNI4_SHAPE, np.float32)
    timecourses = (np.arange(50) * 2.0, np.random.default_rng(0).standard_normal((2, 50)))
    freqs = np.fft.rfftfreq(50, 2.0)
    power = np.random.default_rng(1).random((3, 2, len(freqs)))  # three runs: median and band
    ((png, caption),) = component_montage(
        maps, template, ["IC 0", "IC 1"], tmp_path / "m", (freqs, power), affine=MNI4_AFFINE,
        timecourses=timecourses,
    )  # fmt: skip
    assert caption == "components 0-1"
    red, blue = _colours(png)
    assert red > 50 and blue > 50  # the sign is kept (one colour for |z| would lose it)
    # The colorbar is drawn too: a blank figure of slices alone would have no blue without a negative map.
    only_positive = maps.copy()
    only_positive[maps < 0] = 0
    ((png2, _),) = component_montage(only_positive, template, ["IC 0", "IC 1"], tmp_path / "p")
    assert _colours(png2)[1] > 20


def test_table_rows_link_to_the_figure_that_shows_them(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    component_montage(
        np.ones((*MNI4_SHAPE, 1), np.float32) * 5, np.ones(MNI4_SHAPE), ["IC 0"], tmp_path / "x"
    )
    png = next(tmp_path.glob("x_*.png"))
    import pandas as pd

    table = pd.DataFrame({"component": [0, 12], "label": ["DMN <a>", "Noise"]})
    page = Report("t").table(table, links={"component": [f"#{montage_anchor(k)}" for k in (0, 12)]})
    page.figure(png, "components 0-9", anchor=montage_anchor(0)).figure(
        png, "10-19", anchor=montage_anchor(10)
    )
    html = page.render()
    hrefs = re.findall(r'href="#([^"]+)"', html)
    assert hrefs == ["components-000", "components-010"]
    assert all(f'id="{h}"' in html for h in hrefs)
    assert "DMN &lt;a&gt;" in html  # linked tables still escape their cells
