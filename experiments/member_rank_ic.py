"""Score each member network of a walk-forward model on its own: the seed spread of one configuration, no retraining.

    python experiments/member_rank_ic.py --runs OUT/runs/storm_small_3_members \\
        --span 0=OUT/spans/storm_small/seed0_<key> ... --baseline OUT/spans/lightgbm/ensemble_<key>

A walk-forward run of ``members: K`` and seed s holds the networks that single runs of seeds
K*s .. K*s+K-1 would have trained (bit-identical: tests/test_storm_qlib.py). Predicting every
fold's test period with each member alone therefore gives those single runs' daily RankIC
without training them again. One-network spans of the same configuration (``--span``) join
them as further seeds. Each network is paired by day with the baseline span (Newey-West t), all
of them form one ensemble, and together they give the spread over seeds: a t over seeds,
mean / (sd / sqrt(n)), that sees the training's noise, which a day-level t does not.
The script checks that the members' ensemble reproduces each run's recorded prediction.
"""

from __future__ import annotations

import argparse
import copy
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

from storm_bt.metrics import daily_rank_ic, mean_test
from storm_bt.pipelines.significance import read_span_series, replicate_t
from storm_bt.workflows.prepared import dataset_config_in
from storm_bt.workflows.qrun import qrun_finished
from storm_bt.workflows.runs import load_artifacts
from storm_bt.workflows.span import ensemble_scores

FOLD_RUN = re.compile(r"fold(\d+)_seed(\d+)_[0-9a-f]+")


def fold_runs_by_seed(runs: Path) -> dict[int, list[Path]]:
    """The finished fold runs of each seed in ``runs``, in fold order; two runs of one fold and seed are refused."""
    found: dict[int, dict[int, Path]] = defaultdict(dict)
    for run_dir in sorted(runs.iterdir()):
        match = FOLD_RUN.fullmatch(run_dir.name)
        if match is None or not qrun_finished(run_dir):
            continue
        fold, seed = int(match[1]), int(match[2])
        if fold in found[seed]:
            raise SystemExit(f"{runs}: fold {fold} of seed {seed} ran twice: {found[seed][fold].name}, {run_dir.name}.")
        found[seed][fold] = run_dir
    if not found:
        raise SystemExit(f"{runs}: no finished fold runs (folders fold<k>_seed<s>_<key> holding qrun.done).")
    return {seed: [folds[k] for k in sorted(folds)] for seed, folds in sorted(found.items())}


def member_predictions(run_dir: Path) -> tuple[dict[int, pd.Series], pd.Series]:
    """Each member's test prediction of one fold run, by its training seed, and the run's label."""
    import qlib
    from qlib.utils import init_instance_by_config

    _, run = load_artifacts(run_dir, ("config", "params.pkl", "pred.pkl", "label.pkl"))
    config, model = run["config"], run["params.pkl"]
    qlib.init(**{k: v for k, v in config["qlib_init"].items() if k != "exp_manager"})
    dataset = init_instance_by_config(dataset_config_in(config, run_dir))
    preds = {}
    for k, network in enumerate(model.networks):
        alone = copy.copy(model)
        alone.networks = [network]
        preds[model.member_seed(k)] = alone.predict(dataset)
    recorded = run["pred.pkl"]["score"]
    ensemble = ensemble_scores([p.to_frame("score") for p in preds.values()])["score"].dropna()
    gap = (ensemble - recorded.reindex(ensemble.index)).abs().max()
    if len(ensemble) != len(recorded) or not gap < 1e-9:
        raise SystemExit(f"{run_dir}: the members' ensemble is not the recorded prediction (max gap {gap}).")
    return preds, run["label.pkl"].iloc[:, 0]


def network_predictions(runs: Path, spans: list[str]) -> tuple[dict[int, pd.Series], pd.Series]:
    """Each network's stitched test scores by training seed: the members of ``runs`` and the one-network
    spans ``SEED=SPAN_DIR`` of the same configuration; and the label."""
    scores, labels = {}, []
    for fold_runs in fold_runs_by_seed(runs).values():
        folds = [member_predictions(run_dir) for run_dir in fold_runs]
        labels.append(pd.concat([label for _, label in folds]).sort_index())
        for seed in folds[0][0]:
            scores[seed] = pd.concat([preds[seed] for preds, _ in folds]).sort_index()
    for item in spans:
        seed, sep, span = item.partition("=")
        if not sep or not seed.isdigit():
            raise SystemExit(f"--span {item!r}: expected SEED=SPAN_DIR.")
        if int(seed) in scores:
            raise SystemExit(f"--span {item!r}: seed {seed} is a member of {runs} already.")
        _, art = load_artifacts(span, ("pred.pkl", "label.pkl"))
        scores[int(seed)] = art["pred.pkl"]["score"]
        labels.append(art["label.pkl"].iloc[:, 0])
    if any(not label.equals(labels[0]) for label in labels[1:]):
        raise SystemExit("The runs and spans were not scored on the same days and labels: not one walk-forward.")
    return dict(sorted(scores.items())), labels[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=Path, help="a walk-forward model's runs folder (members > 1)")
    parser.add_argument("--span", action="append", default=[], metavar="SEED=SPAN", help="a one-network span")
    parser.add_argument("--baseline", required=True, help="the analysed span every network is paired with")
    args = parser.parse_args()
    baseline = read_span_series(args.baseline).rank_ic
    scores, label = network_predictions(args.runs, args.span)

    def row(score: pd.Series) -> dict[str, float]:
        rank_ic = daily_rank_ic(score, label).dropna()
        paired = pd.concat({"m": rank_ic, "b": baseline}, axis=1, join="inner")
        own, diff = mean_test(rank_ic), mean_test(paired["m"] - paired["b"])
        return {"RankIC": own.mean, "t": own.t, "days": own.n, "Δ RankIC": diff.mean, "t (Δ)": diff.t}

    table = pd.DataFrame({f"seed {seed}": row(score) for seed, score in scores.items()}).T
    ensemble = ensemble_scores([score.to_frame("score") for score in scores.values()])["score"]
    table.loc[f"ensemble of {len(scores)}"] = row(ensemble)
    print(f"Paired with {args.baseline}; t = mean / Newey-West standard error of the daily series.")
    print(table.to_string(float_format="{:.4f}".format))
    seeds = table.iloc[:-1][["RankIC", "Δ RankIC"]]
    spread = pd.DataFrame({"mean": seeds.mean(), "sd": seeds.std(ddof=1), "t over seeds": seeds.apply(replicate_t)})
    print(f"\nOver {len(seeds)} seeds: one-sample t, {len(seeds) - 1} degrees of freedom (sees the training's noise).")
    print(spread.to_string(float_format="{:.4f}".format))


if __name__ == "__main__":
    main()
