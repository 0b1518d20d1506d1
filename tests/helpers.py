"""Helpers shared by the tests: reading a provider back through Qlib, folder digests, report checks,
running the quickstart. Fixtures live in ``conftest.py``; tests import helpers from here, never from
each other.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.image import imread

from storm_bt.model.config import StormConfig
from storm_bt.model.trainer import TrainConfig
from storm_bt.model.windows import Panel, WindowDataset

# -- a small planted-signal panel (no Qlib involved) ------------------------------------------------

DAYS, STOCKS, FEATURES, WINDOW = 200, 10, 5, 8
CFG = StormConfig.preset("small", n_stocks=STOCKS, n_features=FEATURES, window=WINDOW, codebook_size=16)
FAST = TrainConfig(epochs=3, batch_size=16, lr=2e-3, progress=False)
SPLIT = 140  # train ends at day SPLIT - 1; valid starts after a 2-day embargo


def planted_frame(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Feature 0 predicts the label (corr ~0.45); SYN-free names so nothing depends on the market module."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=DAYS)
    index = pd.MultiIndex.from_product([dates, [f"S{i:02d}" for i in range(STOCKS)]], names=["datetime", "instrument"])
    x = rng.standard_normal((len(index), FEATURES)).astype(np.float32)
    label = 0.5 * x[:, 0] + rng.standard_normal(len(index))
    return pd.DataFrame(x, index=index, columns=[f"f{i}" for i in range(FEATURES)]), pd.Series(label, index=index)


def datasets(features: pd.DataFrame, labels: pd.Series) -> tuple[WindowDataset, WindowDataset]:
    panel = Panel.from_frame(features, labels)
    return (
        WindowDataset.labelled(panel, WINDOW, None, panel.dates[SPLIT - 1]),
        WindowDataset.labelled(panel, WINDOW, panel.dates[SPLIT + 2], None),
    )


# -- Qlib providers, folders, reports, the quickstart --------------------------------------------------


def qlib_features(provider: Path, instruments: list[str], fields: list[str], start=None, end=None) -> pd.DataFrame:
    """Read fields back through Qlib's own data API (``qlib.data.D.features``)."""
    import qlib
    from qlib.data import D
    from qlib.data.cache import H

    qlib.init(provider_uri=str(provider), region="us", kernels=1)
    H.clear()  # Qlib keeps an in-memory cache across re-inits; tests switch providers
    return D.features(instruments, fields, start_time=start, end_time=end, freq="day")


def folder_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (relative path -> digest): byte-identical means equal."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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


def quickstart(run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "storm_bt.cli",
        "quickstart",
        "--run-dir",
        str(run_dir),
        "--stocks",
        "30",
        "--days",
        "750",
        "--agent-steps",
        "4000",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
