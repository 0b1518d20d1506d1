"""Training loop for STORM under Hugging Face ``accelerate``, selected on the valid segment's RankIC.

One process on CPU, or ``accelerate launch --num_processes K`` (DDP: gloo on CPU, NCCL on GPUs)
with no code change. Each epoch: a shuffled pass over the train windows (every process takes
every K-th window of the epoch's permutation), then the valid RankIC, then a checkpoint. The best
valid RankIC picks the weights that are kept; ``patience`` epochs without improvement stop the
run. Optionally the weights are an exponential moving average over the last epochs' updates, and
the last epoch is kept instead of the best (no selection on the valid year), or the run stops at a
given epoch without validating (a refit on train and valid together). An interrupted run
resumes from ``last.pt``; a damaged checkpoint is an error that names the file and leaves it in place.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from storm_bt.io import atomic_path, atomic_write_text, exclusive
from storm_bt.metrics import rank_ic_summary
from storm_bt.model.blocks import checkpoint_activations
from storm_bt.model.network import WindowNetwork, weighted_loss
from storm_bt.model.quantizer import VectorQuantizer
from storm_bt.model.storm import Storm
from storm_bt.model.windows import WindowDataset

__all__ = ["CheckpointError", "TrainConfig", "TrainResult", "TrainState", "Trainer", "epoch_summary", "predict_windows"]

CHECKPOINT_FORMAT = 1
HISTORY = "history.json"  # in a run folder: one record per finished epoch, rewritten after each
BEST = "best.pt"  # in a run folder: the kept weights and the epoch they come from
EMBEDDING_PARAMETERS = {"cls", "pos", "queries"}  # learned tokens and positions: no weight decay
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # TrainConfig.precision -> the autocast dtype


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, or written by a different configuration."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow the reference (AdamW, betas 0.9/0.95, wd 0.05) plus clipping."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05  # on weight matrices only: never codebooks, norms, biases or embeddings
    warmup_frac: float = 0.1  # share of all steps spent warming up linearly, then cosine decay to 0
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better valid RankIC before stopping
    # False: no selection and no early stopping, the last epoch's weights are kept (valid RankIC still logged)
    select_on_valid: bool = True
    # > 0: validate, select and keep an exponential moving average of the weights, updated after every
    # optimiser step with a time constant of this many epochs of updates (0: the raw weights)
    average_epochs: float = 0.0
    eval_batch_size: int = 64
    seed: int = 0
    # shuffle the stock axis of every training batch, so slots carry no ticker (the network's forward is
    # told each column's stock as stock_ids, which its stock embedding follows)
    permute_stocks: bool = False
    # two-stage schedule: epochs of the network's self-supervised part alone (its pretraining()), before
    # the `epochs` of the full loss, in which the pretrained part learns at pretrained_lr_scale x lr
    pretrain_epochs: int = 0
    pretrained_lr_scale: float = 1.0
    # > 0: end after this epoch of the schedule above and keep its weights, validating nothing: a refit on
    # train and valid together (WindowModel(refit=True)) for the epochs a first fit chose on valid
    stop_epoch: int = 0
    # memory and speed: bf16 autocast (weights and optimiser stay float32; for GPUs, and CPUs with bf16
    # units), and batches whose gradients add up before one optimiser step (batch_size x this per step)
    precision: str = "fp32"
    grad_accumulation: int = 1
    # recompute every transformer layer in the backward pass instead of keeping its activations
    activation_checkpointing: bool = False
    # the training steps through torch.compile (TorchInductor): a one-off compile time per run for faster
    # steps where the fused kernels gain; validation and prediction stay eager
    torch_compile: bool = False
    # PyTorch's deterministic kernels: the same seed gives the same weights (the regression suite's
    # premise); False lets a GPU pick its fastest kernels
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        whole = (("epochs", 1), ("batch_size", 1), ("patience", 1), ("eval_batch_size", 1), ("seed", 0))
        for name, minimum in (*whole, ("pretrain_epochs", 0), ("grad_accumulation", 1), ("stop_epoch", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TrainConfig.{name} must be a whole number of at least {minimum}, got {value!r}.")
        ranges = (
            ("lr", 0.0, math.inf),
            ("weight_decay", 0.0, math.inf),
            ("warmup_frac", 0.0, 1.0),
            ("grad_clip", 0.0, math.inf),
            ("pretrained_lr_scale", 0.0, math.inf),
            ("average_epochs", 0.0, math.inf),
        )
        for name, low, high in ranges:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < high:
                raise ValueError(f"TrainConfig.{name} must be a number in [{low}, {high}), got {value!r}.")
        if self.lr == 0:
            raise ValueError("TrainConfig.lr must be positive, got 0.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}.")
        for name in ("deterministic", "select_on_valid", "activation_checkpointing", "torch_compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be true or false, got {getattr(self, name)!r}.")
        if self.stop_epoch and not self.pretrain_epochs < self.stop_epoch <= self.pretrain_epochs + self.epochs:
            raise ValueError(
                f"TrainConfig.stop_epoch must be an epoch after pretraining and within the schedule "
                f"({self.pretrain_epochs + 1}..{self.pretrain_epochs + self.epochs}), got {self.stop_epoch}."
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {list(PRECISIONS)}, got {self.precision!r}.")


@dataclass
class TrainState:
    """Where a fit stands after ``epoch`` epochs: what ``last.pt`` saves and a resume restores."""

    epoch: int = 0
    best_score: float = -math.inf  # valid RankIC of the best epoch (-inf until one is finite)
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one
    best: dict[str, torch.Tensor] | None = None  # the best epoch's weights
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch (see Trainer.fit)
    usage: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # epoch -> codebook -> count per code

    SCALARS = ("epoch", "best_score", "best_epoch", "stale", "best")  # saved as they are; the rest as JSON


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_rank_ic: float
    epochs_run: int
    history: list[dict[str, Any]]  # per epoch: mean losses and valid RankIC/RankICIR
    code_usage: dict[str, dict[str, list[int]]]  # epoch -> branch -> count per code (the paper's Fig. 3a)


def _param_groups(model: nn.Module, weight_decay: float, lr: float, only: set[int] | None = None) -> list[dict]:
    """Decay 2-D+ weight matrices; leave codebooks, norms, biases and embeddings undecayed.

    ``only``: the ids of the parameters to take (all of them when None)."""
    codebooks = {id(m.codebook) for m in model.modules() if isinstance(m, VectorQuantizer)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (only is not None and id(p) not in only):
            continue
        plain = p.dim() < 2 or id(p) in codebooks or name.rsplit(".", 1)[-1] in EMBEDDING_PARAMETERS
        (no_decay if plain else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr},
    ]


def _warmup_cosine(total_steps: int, warmup_frac: float):
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """PyTorch's deterministic kernels inside the block, the caller's setting restored after.

    With two or more CPU threads, some of PyTorch's default kernels accumulate in an order that
    depends on thread timing: the same seed gave different weights in two processes on a busy
    machine. Ops without a deterministic kernel warn instead of failing.
    """
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@torch.no_grad()
@deterministic_kernels()
def predict_windows(model: nn.Module, data: WindowDataset, batch_size: int = 64) -> np.ndarray:
    """Scores (len(data), N) of ``model`` in eval mode; NaN for stocks absent on the window's last day."""
    was_training = model.training
    model.eval()
    out = []
    for x, mask, _, _ in data.to(next(model.parameters()).device).batches(batch_size):
        pred = model(x, mask).pred
        out.append(torch.where(mask[:, -1], pred.float(), torch.nan))  # float32 under autocast too
    model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.empty((0, data.panel.features.shape[1]), dtype=np.float32)


def rank_ic_of(scores: np.ndarray, data: WindowDataset) -> dict[str, float]:
    """RankIC / RankICIR of ``scores`` against the labels at each window's end date."""
    panel = data.panel
    index = pd.MultiIndex.from_product([panel.dates[data.ends], panel.instruments], names=["datetime", "instrument"])
    labels = panel.labels[data.ends]
    return rank_ic_summary(pd.Series(scores.ravel(), index=index), pd.Series(labels.ravel(), index=index))


class Trainer:
    """Fits a :class:`~storm_bt.model.network.WindowNetwork` on train windows and keeps the weights
    with the best valid RankIC."""

    def __init__(
        self,
        model_cfg: Any,
        train_cfg: TrainConfig,
        run_dir: str | Path | None = None,
        data_signature: dict[str, Any] | None = None,
        network: type[WindowNetwork] = Storm,
    ) -> None:
        """``network(model_cfg)`` is what is trained; ``data_signature`` describes the data (universe,
        date ranges): resuming on other data is refused."""
        self.network = network
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.data_signature = data_signature or {}
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())

    # -- public -------------------------------------------------------------------------------------

    def fit(
        self, train: WindowDataset, valid: WindowDataset | None, resume: bool = True
    ) -> tuple[nn.Module, TrainResult]:
        """Train from scratch, or from ``run_dir/last.pt`` when ``resume`` and it exists (deterministic kernels
        unless ``TrainConfig.deterministic`` is False). ``valid`` is None only with ``TrainConfig.stop_epoch``
        (its valid RankIC is then NaN).

        Each epoch appends a record to the history (``history.json`` in ``run_dir``, rewritten
        atomically): ``epoch``, the mean of ``loss`` and of every loss term, ``grad_<term>.<encoder>``,
        ``perplexity_<codebook>``, ``valid_RankIC`` / ``valid_RankICIR`` and, in a two-stage run,
        ``pretraining`` (1 in the first stage, else 0). Every value is a number. A parent process follows
        a run's progress there. The main process holds ``run_dir``'s lock throughout: a second
        training into the same folder fails at once.
        """
        writes = self.run_dir is not None and self.accelerator.is_main_process
        with (
            exclusive(self.run_dir, "training checkpoint folder") if writes else nullcontext(),
            deterministic_kernels() if self.cfg.deterministic else nullcontext(),
        ):
            return self._fit(train, valid, resume)

    def _fit(self, train: WindowDataset, valid: WindowDataset | None, resume: bool) -> tuple[nn.Module, TrainResult]:
        acc, cfg = self.accelerator, self.cfg
        self._check_windows(train, valid)
        train = train.to(acc.device)  # batches are sliced where the model is
        valid = None if valid is None else valid.to(acc.device)
        set_seed(cfg.seed)
        model = self.network(self.model_cfg)
        if cfg.pretrain_epochs and not hasattr(model, "pretraining"):
            raise ValueError(
                f"TrainConfig.pretrain_epochs is {cfg.pretrain_epochs}, but {self.network.__name__} has no "
                "pretraining() that names what a first stage trains: set pretrain_epochs to 0."
            )
        if cfg.permute_stocks and "stock_ids" not in inspect.signature(model.forward).parameters:
            raise ValueError(
                f"TrainConfig.permute_stocks is on, but {self.network.__name__}.forward takes no stock_ids to say "
                "which stock each shuffled column holds: turn permute_stocks off."
            )
        if cfg.activation_checkpointing and not checkpoint_activations(model):
            raise ValueError(
                f"TrainConfig.activation_checkpointing is on, but {self.network.__name__} has no transformer "
                "layers to recompute: turn it off."
            )
        whole_batches = len(train) // acc.num_processes // cfg.batch_size
        if cfg.grad_accumulation > max(1, whole_batches):
            raise ValueError(
                f"TrainConfig.grad_accumulation ({cfg.grad_accumulation}) x batch_size ({cfg.batch_size}) x "
                f"{acc.num_processes} process(es) needs more than the {len(train)} training windows."
            )
        # optimiser updates per epoch, each of grad_accumulation batches per process (whole updates only)
        updates_per_epoch = whole_batches // cfg.grad_accumulation or 1
        batches_per_epoch = updates_per_epoch * cfg.grad_accumulation
        state, last = TrainState(), None
        if resume and self._last_path() is not None and self._last_path().exists():
            state, last = self._read_last()
        # the checkpoint holds the optimiser of the stage its next epoch is in
        optimizer, scheduler = self._optimizer(model, updates_per_epoch, pretraining=state.epoch < cfg.pretrain_epochs)
        if last is not None:
            self._restore(last, model, optimizer, scheduler)
            acc.print(f"resuming from {self._last_path()} after epoch {state.epoch}")
        ddp_model, optimizer = acc.prepare(model, optimizer)
        if cfg.torch_compile:  # a wrapper for the training steps only: prediction (other shapes) stays eager
            ddp_model = torch.compile(ddp_model)
        average = self._weight_average(model, updates_per_epoch)
        if average is not None and last is not None:
            average.load_state_dict(last["average"])
        scored = model if average is None else average.module  # the weights validated, selected and kept
        last_epoch = cfg.stop_epoch or cfg.pretrain_epochs + cfg.epochs
        while state.epoch < last_epoch and state.stale < cfg.patience:
            epoch = state.epoch + 1
            pretraining = epoch <= cfg.pretrain_epochs
            probe = train.batch(next(self._epoch_batches(train, epoch, 1)))[:3]
            with self._autocast():  # as the batches train: in fp32 it alone set the peak memory of a bf16 run
                gradients = term_gradient_norms(model, *probe)
            weights = model.pretraining()[1] if pretraining else None
            losses = self._train_epoch(
                ddp_model, optimizer, scheduler, train, epoch, batches_per_epoch, weights=weights, average=average
            )
            usage = {name: quantizer.reset_usage() for name, quantizer in _quantizers(model).items()}
            state.usage[str(epoch)] = {name: counts.tolist() for name, counts in usage.items()}
            perplexity = {f"perplexity_{name}": usage_perplexity(counts) for name, counts in usage.items()}
            score = self._valid_score(scored, valid)
            record = {"epoch": epoch, **losses, **gradients, **perplexity}
            record.update({f"valid_{k}": v for k, v in score.items()})
            if cfg.pretrain_epochs:
                record["pretraining"] = float(pretraining)
            if not pretraining:  # in pretraining the predictor is untrained: its valid RankIC chooses nothing
                self._select(state, scored, epoch, score["RankIC"])
            state.history.append(record)
            state.epoch = epoch
            acc.print(f"{epoch_summary(record)}  ({self._progress(state, pretraining)})")
            if epoch == cfg.pretrain_epochs:
                optimizer, scheduler = self._optimizer(model, updates_per_epoch, pretraining=False)
                optimizer = acc.prepare_optimizer(optimizer)
            self._save(model, optimizer, scheduler, state, average)
        if valid is not None and not math.isfinite(state.best_score):
            acc.print(
                f"warning: the valid RankIC was NaN in all {state.epoch} epochs (constant scores or labels); "
                f"keeping epoch {state.best_epoch}'s weights"
            )
        model.load_state_dict(state.best)
        model.eval()
        result = TrainResult(state.best_epoch, state.best_score, state.epoch, state.history, state.usage)
        return model, result

    def _check_windows(self, train: WindowDataset, valid: WindowDataset | None) -> None:
        if len(train) == 0:
            raise ValueError("No training windows: the train segment has no dates with labels.")
        if valid is None and not self.cfg.stop_epoch:
            raise ValueError("No valid windows given: only a run with TrainConfig.stop_epoch needs none.")
        if valid is not None and len(valid) == 0:
            raise ValueError("No valid windows: checkpoint selection needs a valid segment with labels.")

    def _valid_score(self, model: nn.Module, valid: WindowDataset | None) -> dict[str, float]:
        """RankIC / RankICIR of ``model`` on ``valid`` (NaN without valid windows)."""
        if valid is None:
            return {"RankIC": math.nan, "RankICIR": math.nan}
        with self._autocast():
            return rank_ic_of(predict_windows(model, valid, self.cfg.eval_batch_size), valid)

    def _progress(self, state: TrainState, pretraining: bool) -> str:
        if pretraining:
            return "pretraining"
        if self.cfg.stop_epoch:
            return f"stops at epoch {self.cfg.stop_epoch}"
        return f"best {state.best_score:.4f} @ {state.best_epoch}"

    def _optimizer(self, model: nn.Module, updates_per_epoch: int, pretraining: bool):
        """AdamW and its warm-up-cosine schedule over one stage: the pretrained part alone in the
        first stage; everything in the second, the pretrained part at ``pretrained_lr_scale`` x lr."""
        cfg = self.cfg
        if cfg.pretrain_epochs:
            pretrained = {id(p) for p in model.pretraining()[0]}
            heads = {id(p) for p in model.parameters()} - pretrained
            groups = _param_groups(
                model, cfg.weight_decay, cfg.lr * (1.0 if pretraining else cfg.pretrained_lr_scale), pretrained
            )
            if not pretraining:
                groups += _param_groups(model, cfg.weight_decay, cfg.lr, heads)
        else:
            groups = _param_groups(model, cfg.weight_decay, cfg.lr)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        steps = updates_per_epoch * (cfg.pretrain_epochs if pretraining else cfg.epochs)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps, cfg.warmup_frac))

    def _autocast(self):
        """``TrainConfig.precision``'s autocast on this device (nothing for fp32)."""
        dtype = PRECISIONS[self.cfg.precision]
        return nullcontext() if dtype is None else torch.autocast(self.accelerator.device.type, dtype=dtype)

    def _weight_average(self, model: nn.Module, updates_per_epoch: int) -> AveragedModel | None:
        """The moving average of ``model``'s weights that ``average_epochs`` asks for (None when 0).

        The decay 1 - 1/(average_epochs x updates per epoch) gives the same time constant in
        epochs on any data size; buffers (code usage) follow the model."""
        if not self.cfg.average_epochs:
            return None
        decay = 1.0 - 1.0 / max(1.0, self.cfg.average_epochs * updates_per_epoch)
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def _select(self, state: TrainState, model: nn.Module, epoch: int, valid_rank_ic: float) -> None:
        """Keep this epoch's weights if its valid RankIC is the best so far (NaN counts as -inf), or
        always when ``select_on_valid`` is off or the run stops at ``stop_epoch``."""
        valid_ic = valid_rank_ic if np.isfinite(valid_rank_ic) else -math.inf
        always = not self.cfg.select_on_valid or self.cfg.stop_epoch
        if valid_ic > state.best_score or state.best is None or always:
            state.best_score, state.best_epoch, state.stale = valid_ic, epoch, 0
            state.best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state.stale += 1

    # -- epoch --------------------------------------------------------------------------------------

    def _epoch_batches(self, train: WindowDataset, epoch: int, steps: int) -> Iterator[list[int]]:
        """This process's batches: a seeded permutation per epoch, shard k of K, equal step counts."""
        acc, size = self.accelerator, self.cfg.batch_size
        generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=generator)[acc.process_index :: acc.num_processes].tolist()
        for step in range(steps):
            yield order[step * size : (step + 1) * size]

    def _train_epoch(
        self, ddp_model, optimizer, scheduler, train: WindowDataset, epoch: int, steps: int, weights=None, average=None
    ):
        """One pass over this process's batches; ``weights`` replace the network's loss weights (pretraining);
        ``average`` follows every optimiser step."""
        acc, cfg = self.accelerator, self.cfg
        ddp_model.train()
        model = acc.unwrap_model(ddp_model)
        batches = list(self._epoch_batches(train, epoch, steps))
        names: list[str] = []
        sums: torch.Tensor | None = None  # on the model's device: reading a loss per batch would wait for the GPU
        bar = tqdm(batches, desc=f"epoch {epoch}", disable=None if cfg.progress and acc.is_local_main_process else True)
        for batch, indices in enumerate(bar):
            x, mask, y, _ = train.batch(indices)
            columns = {}  # which stock each column holds, once the stock axis is shuffled
            if cfg.permute_stocks:
                x, mask, y, columns["stock_ids"] = permute_stocks(x, mask, y)
            update = (batch + 1) % cfg.grad_accumulation == 0  # DDP syncs and the optimiser steps on these
            with nullcontext() if update else acc.no_sync(ddp_model), self._autocast():
                out = ddp_model(x, mask, y, **columns)
                loss = out.loss if weights is None else weighted_loss(out.loss_terms, weights)
            acc.backward(loss / cfg.grad_accumulation)  # each update follows the mean over its batches
            if update:
                if cfg.grad_clip > 0:
                    acc.clip_grad_norm_(ddp_model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if average is not None:
                    average.update_parameters(model)
            terms = {"loss": loss, **out.loss_terms}
            values = torch.stack([value.detach().float() for value in terms.values()])
            names, sums = list(terms), values if sums is None else sums + values
            if not bar.disable:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        means = [] if sums is None else (sums / len(batches)).tolist()
        return dict(zip(names, means, strict=True))

    # -- checkpoints --------------------------------------------------------------------------------

    def _last_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "last.pt"

    def _fingerprint(self) -> dict[str, Any]:
        train = asdict(self.cfg)
        train.pop("progress")
        return {
            "network": self.network.__name__,
            "model": asdict(self.model_cfg),
            "train": train,
            "data": self.data_signature,
            "num_processes": self.accelerator.num_processes,
        }

    def _save(self, model: nn.Module, optimizer, scheduler, state: TrainState, average: AveragedModel | None) -> None:
        acc = self.accelerator
        if self.run_dir is None or not acc.is_main_process:
            acc.wait_for_everyone()
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": json.dumps(self._fingerprint(), sort_keys=True),
            "model": model.state_dict(),
            "average": None if average is None else average.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **{k: getattr(state, k) for k in TrainState.SCALARS},
            "history": json.dumps(state.history),
            "usage": json.dumps(state.usage),
        }
        with atomic_path(self.run_dir / "last.pt") as tmp:
            torch.save(payload, tmp)
        self._write_best(state)
        atomic_write_text(self.run_dir / "code_usage.json", json.dumps(state.usage))
        atomic_write_text(self.run_dir / HISTORY, json.dumps(state.history, indent=1))
        acc.wait_for_everyone()

    def _read_last(self) -> tuple[TrainState, dict[str, Any]]:
        """The state that ``last.pt`` records, and the checkpoint, checked against this run's fingerprint."""
        path = self._last_path()
        payload = load_checkpoint(path)
        if payload.get("format") != CHECKPOINT_FORMAT or "fingerprint" not in payload:
            raise CheckpointError(f"{path}: not a storm_bt training checkpoint (format {payload.get('format')!r}).")
        if payload["fingerprint"] != json.dumps(self._fingerprint(), sort_keys=True):
            raise CheckpointError(
                f"{path}: written by a different model, training configuration or data; resume with the same "
                "configuration, or point the run at a new folder (the checkpoint is left as it is)."
            )
        state = TrainState(
            **{k: payload[k] for k in TrainState.SCALARS},
            history=json.loads(payload["history"]),
            usage=json.loads(payload["usage"]),
        )
        self._check_best(state)
        return state, payload

    @staticmethod
    def _restore(payload: dict[str, Any], model: nn.Module, optimizer, scheduler) -> None:
        """Weights, optimiser, schedule and random generators as ``last.pt`` saved them."""
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
        if torch.cuda.is_available() and payload.get("cuda_rng"):
            torch.cuda.set_rng_state_all(payload["cuda_rng"])

    def _write_best(self, state: TrainState) -> None:
        with atomic_path(self.run_dir / BEST) as tmp:
            torch.save({"config": asdict(self.model_cfg), "model": state.best, "epoch": state.best_epoch}, tmp)

    def _check_best(self, state: TrainState) -> None:
        """``best.pt`` must hold the best epoch that ``last.pt`` records: a damaged or stale one is named
        now, not when someone loads it; a missing one is written again from ``last.pt``."""
        if state.best is None:
            return
        path = self.run_dir / BEST
        if not path.exists():
            if self.accelerator.is_main_process:
                self._write_best(state)
            return
        best = load_checkpoint(path)
        weights = best.get("model") or {}
        same = best.get("epoch") == state.best_epoch and weights.keys() == state.best.keys()
        if not (same and all(torch.equal(weights[k], v) for k, v in state.best.items())):
            raise CheckpointError(
                f"{path}: does not hold the best epoch ({state.best_epoch}) that last.pt records. last.pt "
                "has those weights: move best.pt away and rerun to have it written again."
            )


def epoch_summary(record: dict[str, Any]) -> str:
    """One line for a finished epoch's history record: what the trainer prints and a parent shows."""
    return f"epoch {record['epoch']}: loss {record['loss']:.4f}  valid RankIC {record['valid_RankIC']:.4f}"


def permute_stocks(x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The batch with its stock axis in a random order (CPU generator), and that order as ``stock_ids``:
    slot positions then carry no ticker, and only a stock embedding knows which stock is where."""
    order = torch.randperm(x.shape[2])
    return x[:, :, order], mask[:, :, order], y[:, order], order.to(x.device)


def term_gradient_norms(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``grad_<term>.<encoder>``: the L2 norm of each weighted loss term's gradient on each encoder, on one batch.

    Says which terms drive the representation: the return terms should not be drowned by
    reconstruction. Networks without ``encoders()`` (or with nothing to log) give ``{}``.
    """
    encoders = model.encoders() if hasattr(model, "encoders") else {}
    if not encoders:
        return {}
    was_training = model.training
    model.eval()  # no dropout, no code-usage tracking: the probe leaves the run exactly as it was
    groups = {name: [p for p in module.parameters() if p.requires_grad] for name, module in encoders.items()}
    params = [p for group in groups.values() for p in group]
    out = model(x, mask, y)
    norms = {}
    for term, value in out.loss_terms.items():
        grads = torch.autograd.grad(model.loss_weights[term] * value, params, retain_graph=True, allow_unused=True)
        start = 0
        for name, group in groups.items():
            squares = sum(float(g.pow(2).sum()) for g in grads[start : start + len(group)] if g is not None)
            norms[f"grad_{term}.{name}"] = math.sqrt(squares)
            start += len(group)
    model.train(was_training)
    return norms


def usage_perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a codebook's usage counts: the number of equally used codes it amounts to."""
    total = float(counts.sum())
    if total == 0:
        return float("nan")
    p = counts.double() / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` restricted to tensors and plain data; any failure names the file."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: cannot read this checkpoint ({type(exc).__name__}: {exc}). It may be truncated or "
            "corrupt; it was left untouched: move it away to start the run over."
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(payload).__name__}.")
    return payload


def _quantizers(model: nn.Module) -> dict[str, VectorQuantizer]:
    """The network's codebooks by name (none for networks without ``quantizers()``)."""
    return model.quantizers() if hasattr(model, "quantizers") else {}
