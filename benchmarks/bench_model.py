"""STORM model size and speed per preset: parameters, forward latency for one DJ30 day, training samples/s.

    python benchmarks/bench_model.py [--steps 5]

One "DJ30 day" is one window of 29 stocks x 158 Alpha158 features ending on that day. The
reference measured in the same run is the ``small`` preset, so ratios compare presets on this machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from storm_bt.model import Storm, StormConfig

BATCH = 32


def _inputs(cfg: StormConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, cfg.window, cfg.n_stocks, cfg.n_features)
    mask = torch.ones(batch, cfg.window, cfg.n_stocks, dtype=torch.bool)
    return x, mask, 0.01 * torch.randn(batch, cfg.n_stocks)


def measure(preset: str, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = StormConfig.preset(preset)
    model = Storm(cfg)
    params = sum(p.numel() for p in model.parameters())
    x1, m1, _ = _inputs(cfg, 1)
    model.eval()
    with torch.no_grad():
        model(x1, m1)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            model(x1, m1)
        latency = (time.perf_counter() - start) / steps
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, m, y = _inputs(cfg, BATCH)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        model(x, m, y).loss.backward()
        opt.step()
    samples_per_s = steps * BATCH / (time.perf_counter() - start)
    return {"params": params, "latency_ms": latency * 1e3, "train_samples_s": samples_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH} for training")
    rows = {name: measure(name, args.steps) for name in ("small", "paper")}
    print(f"{'preset':<8}{'parameters':>14}{'forward ms/day':>16}{'train samples/s':>17}{'vs small':>10}")
    for name, r in rows.items():
        ratio = rows["small"]["train_samples_s"] / r["train_samples_s"]
        print(f"{name:<8}{r['params']:>14,}{r['latency_ms']:>16.1f}{r['train_samples_s']:>17.1f}{ratio:>9.1f}x")
    print(f"paper preset vs the paper's 15.2M parameters: {rows['paper']['params'] / 15.2e6 - 1:+.1%}")


if __name__ == "__main__":
    main()
