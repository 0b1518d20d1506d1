"""Run by ``accelerate launch`` from test_trainer: fit on the planted panel, write each rank's result.

Arguments: the output folder, then optionally an ablation of the model (e.g. ts_only, or "-" for
none) and a JSON object of further ``TrainConfig`` settings.
"""

import json
import sys
from pathlib import Path

from accelerate import PartialState
from helpers import CFG, datasets, planted_frame

from storm_bt.model.trainer import TrainConfig, Trainer

out = Path(sys.argv[1])
cfg = CFG.ablation(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "-" else CFG
settings = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
train, valid = datasets(*planted_frame())
training = TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 2e-3, "progress": False, **settings})
model, result = Trainer(cfg, training, out / "run").fit(train, valid)
state = PartialState()
checksum = float(sum(p.double().sum() for p in model.state_dict().values()))
(out / f"rank{state.process_index}.json").write_text(
    json.dumps({"world": state.num_processes, "checksum": checksum, "valid_rank_ic": result.best_valid_rank_ic})
)
