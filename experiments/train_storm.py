"""Train STORM from a workflow YAML without qrun: one process, or K processes under ``accelerate launch``.

    python experiments/train_storm.py experiments/workflow_storm_small_dj30.yaml
    accelerate launch --multi_gpu --num_processes 4 experiments/train_storm.py \
        experiments/workflow_storm_paper_dj30.yaml
    accelerate launch --cpu --num_processes 2 experiments/train_storm.py experiments/workflow_storm_small_dj30.yaml \\
        --set precision=bf16 --set epochs=5 --run-dir runs/storm_small_dj30_2proc

The model (``StormModel``'s preset, ablation, model_config and training settings) and the data
(handler, train and valid segments) are the workflow's, so the model is the one ``qrun`` trains.
Qlib builds the fit panel once, in the first process, into a file keyed by the provider's content
and the handler (``--panel-dir``); every process then trains on that file: no qrun, no recorder,
no Qlib in the training loop. It prints, from the first process, the epochs run, the wall time per epoch
(validation and checkpoints included), training samples/s and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from ruamel.yaml import YAML

from storm_bt.data.provider import provider_digest
from storm_bt.model.qlib_model import StormModel
from storm_bt.model.trainer import HISTORY, Trainer
from storm_bt.model.windows import Panel, WindowDataset, training_signature
from storm_bt.workflows.prepared import panel_key, prepare_panel
from storm_bt.workflows.qrun import load_workflow


def workflow_model(config: dict[str, Any], overrides: list[str]) -> StormModel:
    """The workflow's StormModel, unfitted, with ``key=value`` overrides of its training settings."""
    model = config["task"]["model"]
    if model.get("class") != "StormModel":
        raise SystemExit(f"train_storm.py trains StormModel workflows; this one's model is {model.get('class')!r}.")
    kwargs = dict(model.get("kwargs") or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {item!r}.")
        kwargs[key] = YAML(typ="safe").load(value)
    try:
        storm = StormModel(**kwargs)
    except ValueError as exc:  # a bad setting fails here, before any data is built
        raise SystemExit(str(exc)) from exc
    if storm.members != 1 or storm.refit:
        raise SystemExit("train_storm.py trains one network on train, validated on valid; members and refit need qrun.")
    return storm


def peak_memory_mib(device: torch.device) -> float:
    """This process's peak: the CUDA allocator's on a GPU, the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a TrainConfig setting")
    parser.add_argument("--run-dir", help="checkpoint folder (default: the workflow's run_dir)")
    parser.add_argument("--panel-dir", type=Path, default=Path("~/.storm_bt/panels").expanduser())
    args = parser.parse_args()

    config = load_workflow(args.workflow)
    model = workflow_model(config, args.set)
    provider = Path(str(config["qlib_init"]["provider_uri"])).expanduser()
    panel_file = args.panel_dir / f"{panel_key(config, provider_digest(provider))}.npz"
    state = PartialState(cpu=not torch.cuda.is_available())  # as the Trainer's Accelerator: gloo on CPUs
    with state.main_process_first():  # the first process builds the panel; the others wait, then read it
        if not panel_file.is_file():
            prepare_panel(config, panel_file)
    panel = Panel.load(panel_file)
    segments = config["task"]["dataset"]["kwargs"]["segments"]
    cfg = model.network.configure(len(panel.instruments), panel.features.shape[2], **model.network_config)
    train = WindowDataset.labelled(panel, cfg.window, *segments["train"], model.target_days)
    valid = WindowDataset.labelled(panel, cfg.window, *segments["valid"])  # judged on the day's label, as in fit
    state.print(
        f"{args.workflow}: {model.preset} preset, {len(panel.instruments)} stocks x "
        f"{panel.features.shape[2]} features, {len(train)} train / {len(valid)} valid windows, "
        f"{state.num_processes} process(es) on {state.device}"
    )
    run_dir = args.run_dir or model.run_dir
    history = Path(run_dir) / HISTORY if run_dir else None
    done_before = len(json.loads(history.read_text())) if history and history.is_file() else 0
    trainer = Trainer(cfg, model.train_config, run_dir, training_signature(train, valid), network=model.network)
    start = time.perf_counter()
    _, result = trainer.fit(train, valid, resume=model.resume)
    seconds = time.perf_counter() - start
    epochs = max(1, result.epochs_run - done_before)  # a resumed run times only the epochs it ran
    state.print(
        f"{epochs} epochs in this run ({result.epochs_run} in all), {seconds / epochs:.1f} s per epoch, "
        f"{len(train) * epochs / seconds:.1f} train samples/s (all processes), "
        f"peak {peak_memory_mib(state.device):,.0f} MiB per process; "
        f"best valid RankIC {result.best_valid_rank_ic:.4f} at epoch {result.best_epoch}"
    )


if __name__ == "__main__":
    main()
