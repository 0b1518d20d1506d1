"""STORM's size, memory and speed per preset and universe: what fits where, and what the trainer costs.

    python benchmarks/bench_model.py                                   # CPU: 29 / 100 / 408 stocks
    python benchmarks/bench_model.py --device cuda --precision fp32,bf16
    python benchmarks/bench_model.py --presets paper --stocks 408 --checkpointing off,on --memory-only
    python benchmarks/bench_model.py --presets small --stocks 29 --compile off,on

Per (preset, stocks, precision, activation checkpointing, torch.compile of the training steps):
parameters; the peak memory of one training step at the batch (CPU: the peak RSS of a child
process that builds the model and takes that step; GPU: ``torch.cuda.max_memory_allocated``);
forward latency for one day (one window, always eager, as prediction in the trainer); training
samples/s of the model alone (forward, backward, AdamW on one batch) and of the real ``Trainer``
path. The trainer figure is marginal: one ``Trainer.fit`` epoch over 2n batches minus one over n,
so what an epoch does once (model construction, the gradient probe, validation) drops out and what
every batch pays stays in: slicing windows out of a panel, masks, deterministic kernels, autocast,
clipping, the schedule. The panel is synthetic with the real shapes (2,700 train days, 158
features, stocks listing and delisting): the loader's cost does not depend on the values.

The reference measured in the same run is the model alone: trainer/model is taken within each
interleaved round (``benchmarks/timing.py``). On a CPU, a configuration whose step would need more
than 80% of the free memory (extrapolated from batches of 1 and 2) is reported and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psutil
import torch
from timing import child_run, interleaved, machine_line, spread

from storm_bt.model import Storm, StormConfig
from storm_bt.model.blocks import checkpoint_activations
from storm_bt.model.trainer import PRECISIONS, TrainConfig, Trainer
from storm_bt.model.windows import Panel, WindowDataset

TRAIN_DAYS = 2_700  # about the train segment of the DJ30 / SP500 protocols (2008-04 .. 2018-12)
FREE_SHARE = 0.8  # of the free memory a CPU configuration may take


@dataclass(frozen=True)
class Case:
    preset: str
    stocks: int
    precision: str
    checkpointing: bool = False
    compiled: bool = False  # the training steps through torch.compile, as TrainConfig.torch_compile

    def config(self) -> StormConfig:
        return StormConfig.preset(self.preset, n_stocks=self.stocks)

    def __str__(self) -> str:
        options = ("/checkpointing" if self.checkpointing else "") + ("/compiled" if self.compiled else "")
        return f"{self.preset}/{self.stocks}/{self.precision}{options}"


def synthetic_panel(n_stocks: int, n_features: int, days: int, seed: int = 0) -> Panel:
    """Random features and labels on ``days`` sessions; a third of the stocks list late or delist early."""
    rng = np.random.default_rng(seed)
    listed = np.where(rng.random(n_stocks) < 1 / 3, rng.integers(0, days // 4, n_stocks), 0)
    delisted = np.where(rng.random(n_stocks) < 1 / 3, days - rng.integers(0, days // 4, n_stocks), days)
    day = np.arange(days)[:, None]
    present = (day >= listed) & (day < delisted)
    features = rng.standard_normal((days, n_stocks, n_features), dtype=np.float32) * present[..., None]
    labels = np.where(present, 0.02 * rng.standard_normal((days, n_stocks)), np.nan).astype(np.float32)
    dates = pd.bdate_range("2001-01-02", periods=days)
    instruments = pd.Index([f"S{i:03d}" for i in range(n_stocks)], name="instrument")
    return Panel(dates, instruments, features, present, labels)


def _batch(cfg: StormConfig, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    x = torch.randn(batch, cfg.window, cfg.n_stocks, cfg.n_features, device=device)
    mask = torch.ones(batch, cfg.window, cfg.n_stocks, dtype=torch.bool, device=device)
    return x, mask, 0.01 * torch.randn(batch, cfg.n_stocks, device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(case: Case, device: torch.device):
    dtype = PRECISIONS[case.precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def model_step(case: Case, batch: int, device: torch.device) -> Callable[[], None]:
    """One training step of the model alone (forward, backward, AdamW), on the panel's first batch."""
    torch.manual_seed(0)
    cfg = case.config()
    model = Storm(cfg).to(device).train()
    if case.checkpointing:
        checkpoint_activations(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_model = torch.compile(model) if case.compiled else model
    panel = synthetic_panel(cfg.n_stocks, cfg.n_features, cfg.window + batch)
    x, mask, y, _ = (
        WindowDataset(panel, cfg.window, np.arange(cfg.window, cfg.window + batch)).to(device).batch(range(batch))
    )

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(case, device):
            loss = train_model(x, mask, y).loss
        loss.backward()
        opt.step()

    return step


def measures(
    case: Case, batch: int, steps: int, device: torch.device, deterministic: bool
) -> dict[str, Callable[[], float]]:
    """Forward ms per day, model-alone training samples/s and the trainer's marginal samples/s."""
    cfg = case.config()
    model = Storm(cfg).to(device).eval()
    x1, m1, _ = _batch(cfg, 1, device)
    step = model_step(case, batch, device)
    panel = synthetic_panel(cfg.n_stocks, cfg.n_features, TRAIN_DAYS)
    ends = np.arange(cfg.window, TRAIN_DAYS)
    valid = WindowDataset(panel, cfg.window, ends[-1:])
    settings = TrainConfig(
        epochs=1,
        batch_size=batch,
        patience=1,
        precision=case.precision,
        activation_checkpointing=case.checkpointing,
        torch_compile=case.compiled,
        deterministic=deterministic,
        progress=False,
    )

    def latency_ms() -> float:
        with torch.no_grad(), _autocast(case, device):
            model(x1, m1)  # warm-up
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                model(x1, m1)
            _sync(device)
        return (time.perf_counter() - start) / steps * 1e3

    def model_samples_s() -> float:
        step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return steps * batch / (time.perf_counter() - start)

    def fit_seconds(batches: int) -> float:
        train = WindowDataset(panel, cfg.window, ends[: batches * batch])
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's line per epoch
            Trainer(cfg, settings).fit(train, valid, resume=False)
        _sync(device)
        return time.perf_counter() - start

    def trainer_samples_s() -> float:
        return steps * batch / (fit_seconds(2 * steps) - fit_seconds(steps))

    if case.compiled:  # compile once outside the timings: later fits reuse the compiled graphs
        fit_seconds(1)

    return {"forward": latency_ms, "model": model_samples_s, "trainer": trainer_samples_s}


def peak_mib(case: Case, batch: int, device: torch.device) -> float:
    """Peak memory of one training step: a child's RSS on CPU, the allocator's peak on GPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step = model_step(case, batch, device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated() / 2**20
    args = [sys.executable, __file__, "--step-only", case.preset, str(case.stocks), case.precision, str(batch)]
    args += ["--checkpointing", "on" if case.checkpointing else "off", "--compile", "on" if case.compiled else "off"]
    return child_run(args)[1]


def cpu_fits(case: Case, batch: int) -> tuple[bool, float]:
    """Whether one CPU training step at ``batch`` fits in the free memory, from steps of 1 and 2 windows."""
    one = peak_mib(case, 1, torch.device("cpu"))
    free = psutil.virtual_memory().available / 2**20 * FREE_SHARE
    if 2 * one > free:
        return False, one * batch
    two = peak_mib(case, 2, torch.device("cpu"))
    need = two + (batch - 2) * (two - one)
    return need <= free, need


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--stocks", default="29,100,408")
    parser.add_argument("--precision", default="fp32", help=f"comma-separated, of {list(PRECISIONS)}")
    parser.add_argument(
        "--checkpointing", default="off", help="comma-separated, of off,on: activation checkpointing in training"
    )
    parser.add_argument("--compile", default="off", help="comma-separated, of off,on: torch.compile of training")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16, help="the workflows' batch (small preset: 16)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-only", action="store_true", help="parameters and peak memory, no timings")
    parser.add_argument("--nondeterministic", action="store_true", help="the trainer without deterministic kernels")
    step_only = ("PRESET", "STOCKS", "PRECISION", "BATCH")
    parser.add_argument("--step-only", nargs=4, metavar=step_only, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for option in ("checkpointing", "compile"):
        if not set(getattr(args, option).split(",")) <= {"off", "on"}:
            parser.error(f"--{option} takes off and/or on, got {getattr(args, option)!r}")
    device = torch.device(args.device)
    if args.step_only:  # the child whose peak RSS peak_mib reads
        preset, stocks, precision, batch = args.step_only
        case = Case(preset, int(stocks), precision, args.checkpointing == "on", args.compile == "on")
        model_step(case, int(batch), device)()
        return
    cases = [
        Case(preset, int(stocks), precision, checkpointing == "on", compiled == "on")
        for preset in args.presets.split(",")
        for stocks in args.stocks.split(",")
        for precision in args.precision.split(",")
        for checkpointing in args.checkpointing.split(",")
        for compiled in args.compile.split(",")
    ]
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    trainer = "nondeterministic" if args.nondeterministic else "deterministic"
    print(f"torch {torch.__version__}, {device} {where}, batch {args.batch}, {trainer} trainer; "
          f"{machine_line(args.repeats)}; median [min .. max]", flush=True)  # fmt: skip
    header = (f"{'preset':<7}{'stocks':>7}{'prec':>6}{'ckpt':>5}{'comp':>5}{'parameters':>12}{'peak MiB':>10}"
              f"{'forward ms/day':>24}{'model samples/s':>24}"
              f"{'trainer samples/s':>24}{'trainer/model':>22}")  # fmt: skip
    print(header, flush=True)
    for case in cases:
        params = sum(p.numel() for p in Storm(case.config()).parameters())
        ckpt, comp = ("on" if on else "off" for on in (case.checkpointing, case.compiled))
        head = f"{case.preset:<7}{case.stocks:>7}{case.precision:>6}{ckpt:>5}{comp:>5}{params:>12,}"
        if device.type == "cpu":
            fits, need = cpu_fits(case, args.batch)
            if not fits:
                print(f"{head}  needs about {need / 1024:.1f} GiB at batch {args.batch}: does not fit here", flush=True)
                continue
        if args.memory_only:
            print(f"{head}{peak_mib(case, args.batch, device):>10,.0f}", flush=True)
            continue
        try:
            peak = peak_mib(case, args.batch, device)
            figures = interleaved(
                measures(case, args.batch, args.steps, device, not args.nondeterministic), args.repeats
            )
        except torch.cuda.OutOfMemoryError:
            print(f"{head}  out of GPU memory at batch {args.batch}", flush=True)
            torch.cuda.empty_cache()
            continue
        ratio = figures["trainer"] / figures["model"]
        print(f"{head}{peak:>10,.0f}{spread(figures['forward'], '.1f'):>24}{spread(figures['model'], '.1f'):>24}"
              f"{spread(figures['trainer'], '.1f'):>24}{spread(ratio, '.2f'):>22}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
