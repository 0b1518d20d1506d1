"""Checks that a written report's figures really render: PNG files with drawn content, embedded in the HTML."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
from matplotlib.image import imread


def check_report(html_path: Path, expected: set[str]) -> None:
    page = html_path.read_text()
    embedded = dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page))
    assert set(embedded) == expected, sorted(embedded)
    for name, data in embedded.items():
        png = html_path.parent / f"{name}.png"
        assert base64.b64decode(data) == png.read_bytes()  # the page holds exactly the PNG on disk
        pixels = imread(png)[..., :3]
        assert pixels.shape[0] > 250 and pixels.shape[1] > 400
        colours = np.unique(pixels.reshape(-1, 3).round(2), axis=0)
        ink = (pixels.mean(axis=2) < 0.9).mean()  # share of non-background pixels
        assert len(colours) > 20 and 0.01 < ink < 0.6, (name, len(colours), ink)
