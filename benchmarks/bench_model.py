"""STORM model size and speed per preset: parameters, forward latency for one DJ30 day, training samples/s.

    python benchmarks/bench_model.py [--steps 5]

One "DJ30 day" is one window of 29 stocks x 158 Alpha158 features ending on that day. The
reference measured in the same run is the ``small`` preset, so ratios compare presets on this
machine; presets are measured in interleaved rounds (``benchmarks/timing.py``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from timing import interleaved, machine_line, spread

from storm_bt.model import Storm, StormConfig

BATCH = 32
PRESETS = ("small", "paper")  # the first is the reference


def _inputs(cfg: StormConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, cfg.window, cfg.n_stocks, cfg.n_features)
    mask = torch.ones(batch, cfg.window, cfg.n_stocks, dtype=torch.bool)
    return x, mask, 0.01 * torch.randn(batch, cfg.n_stocks)


def measures(preset: str, steps: int) -> tuple[int, Callable[[], float], Callable[[], float]]:
    """Parameters, and two measures of one model of ``preset``: forward ms for one day, training samples/s."""
    torch.manual_seed(0)
    cfg = StormConfig.preset(preset)
    model = Storm(cfg)
    params = sum(p.numel() for p in model.parameters())
    x1, m1, _ = _inputs(cfg, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, m, y = _inputs(cfg, BATCH)

    def latency_ms() -> float:
        model.eval()
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(steps):
                model(x1, m1)
        return (time.perf_counter() - start) / steps * 1e3

    def train_samples_s() -> float:
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            model(x, m, y).loss.backward()
            opt.step()
        return steps * BATCH / (time.perf_counter() - start)

    with torch.no_grad():
        model.eval()
        model(x1, m1)  # warm-up
    return params, latency_ms, train_samples_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params, timed = {}, {}
    for name in PRESETS:
        params[name], timed[f"{name} forward"], timed[f"{name} train"] = measures(name, args.steps)
    figures = interleaved(timed, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH} for training; "
          f"{machine_line(args.repeats)}; median [min .. max]")  # fmt: skip
    print(f"{'preset':<8}{'parameters':>12}{'forward ms/day':>26}{'train samples/s':>26}{'train time vs small':>24}")
    for name in PRESETS:
        slower = figures["small train"] / figures[f"{name} train"]
        print(f"{name:<8}{params[name]:>12,}{spread(figures[f'{name} forward'], '.1f'):>26}"
              f"{spread(figures[f'{name} train'], '.1f'):>26}{spread(slower, '.1f') + 'x':>24}")  # fmt: skip
    print(f"paper preset vs the paper's 15.2M parameters: {params['paper'] / 15.2e6 - 1:+.1%}")


if __name__ == "__main__":
    main()
