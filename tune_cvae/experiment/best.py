"""run_best's pipeline: pick the winner of a search, retrain it (or replay a PBT winner's schedule, or continue
its checkpoint), validate, predict the test videos, write the submission and its evidence. Each step is one
function; `run_best` calls them in order.
"""
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from tune_cvae.common import UserError, check_writable, say
from tune_cvae.experiment import figures, report, wandb_log
from tune_cvae.experiment.files import BEST_DIR, PER_FRAME_FILE, REPORT_DIR, trial_results
from tune_cvae.experiment.lineage import LineageError, trained_schedule
from tune_cvae.experiment.space import PBT
from tune_cvae.experiment.staging import check_out, staged_output
from tune_cvae.experiment.storage import Storage, experiment_at
from tune_cvae.experiment.tables import TABLE_FILES
from tune_cvae.experiment.winner import best_checkpoint, searched_values, trial_params, trial_threads, winner
from tune_cvae.lab.checkpoint import save_checkpoint
from tune_cvae.lab.config import ConfigError, make_config
from tune_cvae.lab.data import load_dataset
from tune_cvae.lab.leaderboard import predict_tests, score, scored_mean, write_gifs, write_submission
from tune_cvae.lab.train import pick_device, train, validate

REPRODUCED_DB = 0.3  # a retraining or replay further than this from its trial is warned about
TERMINAL = sys.stderr.isatty()  # progress bars on a terminal; a log file gets one line per stage


@contextlib.contextmanager
def stage(what):
    """One line when a stage of run_best ends, with its duration."""
    t0 = time.perf_counter()
    yield
    seconds = time.perf_counter() - t0
    say(f"{what}: {seconds:.1f} s" if seconds < 120 else f"{what}: {seconds / 60:.1f} min")


def retrain(config, dataset, device, seeds, state=None, schedule=None):
    """Train `config` (following a PBT `schedule`: train.train's) with seeds seed, seed+1, ...; returns (best
    val_psnr of each seed, the first seed's Run, {epoch, val_psnr, model}: the first seed's best epoch by val_psnr
    and its weights, which are submitted)."""
    bests, first, kept = [], None, {}

    def keep_best(metrics, run):
        if not TERMINAL:  # no progress bars in a log file: one line per epoch instead
            say(f"  epoch {metrics['epoch']}/{run.config['num_epoch']}: val_psnr {metrics['val_psnr']:.2f} dB, "
                f"loss {metrics['loss']:.4g}, {metrics['epoch_s']:.0f} s")
        if run.config["seed"] != config["seed"]:
            return
        if metrics["val_psnr"] > kept.get("val_psnr", -math.inf):
            kept.update(val_psnr=metrics["val_psnr"], epoch=metrics["epoch"],
                        model={k: v.detach().clone() for k, v in run.model.state_dict().items()})

    for k in range(seeds):
        cfg = {**config, "seed": config["seed"] + k}
        say(f"retraining with seed {cfg['seed']} ({k + 1}/{seeds}) for {cfg['num_epoch']} epochs on {device}, "
            f"{torch.get_num_threads()} torch thread(s)")
        with stage(f"retraining with seed {cfg['seed']}"):
            final, run = train(cfg, dataset, device, state if k == 0 else None, keep_best, progress=TERMINAL,
                               schedule=schedule)
        if final.get("diverged"):
            raise UserError(f"the winner's configuration diverged when retrained with seed {cfg['seed']}")
        bests.append(final["best_val_psnr"])
        first = first or run
    if not kept:  # continued from a checkpoint already at its last epoch: its weights as they are
        kept = {"val_psnr": first.history[-1]["val_psnr"], "epoch": first.epoch, "model": first.model.state_dict()}
    first.model.load_state_dict(kept["model"])
    return bests, first, kept


def compare_with_trial(trial_dir, trial_config, run, metric, changed=False):
    """Print the trial's best val_psnr beside the retraining's at the same epoch; warn when they differ by more
    than REPRODUCED_DB although the run repeats the trial's schedule (same config, seed and thread count; `changed`:
    --set changed the config)."""
    history = [r for r in trial_results(trial_dir)
               if isinstance(r.get("val_psnr"), float) and math.isfinite(r["val_psnr"])]
    if not history or not run.history:
        return
    best = max(history, key=lambda r: r["val_psnr"])
    epoch = min(best["epoch"], len(run.history))
    mine = run.history[epoch - 1]["val_psnr"]
    say(f"trial's val_psnr at epoch {epoch}: {best['val_psnr']:.2f} dB; retrained: {mine:.2f} dB"
        + ("" if metric == "val_psnr" else f" (the search ranked by {metric})")
        + (" (config changed for the retraining: the space's retrain.set, --set)" if changed else ""))
    same_schedule = not changed and trial_config["num_epoch"] == run.config["num_epoch"] and epoch == best["epoch"]
    if same_schedule and abs(mine - best["val_psnr"]) > REPRODUCED_DB:
        say(f"warning: the retraining differs from the trial by {mine - best['val_psnr']:+.2f} dB with the same "
            f"config and seed (other device or library version?)")


def replay_plan(exp, row, overrides, epochs):
    """A PBT winner's replay: (its config at its best epoch with `overrides`, run for `epochs` or that many
    epochs; per epoch the held values its weights trained with; the lineage's rows). Where the records of the
    lineage are gone, one line that says so and names --from-checkpoint."""
    best_epoch = int(row["best_epoch"])
    try:
        rows = trained_schedule(exp, row["trial_id"], best_epoch)
    except LineageError as e:
        raise UserError(f"cannot replay the winner's lineage: {e}; continue its checkpoint instead with "
                        f"--from-checkpoint") from None
    at_best = next(r for r in trial_results(exp / row["trial_dir"]) if r["epoch"] == best_epoch)
    config = make_config({**at_best["config"], **overrides, "num_epoch": epochs or best_epoch})
    schedule = [{"kl_beta_max": r["beta"], "tfr": r["tfr"], "lr": r["lr"]} for r in rows]
    say(f"replaying the PBT lineage of trial {row['trial_id']} from scratch ({at_best['lineage']}: trial:epochs), "
        f"{len(rows)} epochs of its schedule" + (f", then its last values to epoch {epochs}" if (epochs or 0) >
                                                 len(rows) else ""))
    return config, schedule, rows


def compare_replay(rows, run):
    """Each epoch's val_psnr of the replay beside the lineage's; the largest difference (dB), warned about above
    REPRODUCED_DB."""
    pairs = [(r["val_psnr"], h["val_psnr"]) for r, h in zip(rows, run.history)]
    say("replay vs trial, val_psnr per epoch (dB): " + ", ".join(f"{b:.2f}/{a:.2f}" for a, b in pairs))
    gap = max(abs(a - b) for a, b in pairs)
    say(f"largest difference {gap:.3f} dB over {len(pairs)} epochs"
        + ("" if gap <= REPRODUCED_DB else f" -- warning: above {REPRODUCED_DB} dB (another device, thread count "
                                            f"or library version?)"))
    return gap


def write_validation(out, run, epoch, source):
    """The submitted weights' validation rollout (as validated after `epoch`), kept per frame (CSV + plot, whose
    title names the `source`); returns the PSNR per frame."""
    psnr, _ = validate(run, epoch, frames=0)  # the whole video, whatever the search validated on
    pd.DataFrame({"frame": range(1, len(psnr) + 1), "psnr": psnr.numpy()}).to_csv(
        out / PER_FRAME_FILE, index=False)
    figures.psnr_per_frame(psnr.tolist(), source, out / Path(PER_FRAME_FILE).with_suffix(".png"))
    return psnr


def write_predictions(out, run, infer_z, epoch):
    """The test videos' rollouts as submission.csv (checked) and GIFs; the config and the submitted weights
    (model.ckpt: the run's state with the weights of `epoch`) beside them."""
    videos = predict_tests(run, infer_z, run.config["seed"])
    write_submission(out / "submission.csv", videos)
    write_gifs(out, videos)
    (out / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
    save_checkpoint({**run.state(), "submitted_epoch": epoch}, out / "model.ckpt")


def winner_config(exp, space, row, trial_dir, overrides):
    """(the trial's params, the retraining's config: the params with `overrides`), said in three lines."""
    params = trial_params(trial_dir)
    try:
        config = make_config({**params, **overrides})
    except ConfigError as e:
        raise UserError(f"--set: {e}") from None
    say(f"winner: trial {row['trial_id']} of {exp.name}, best {space.metric} "
        f"{row['best_' + space.metric]:.3f} after {row['epochs']} of {space.max_epochs} epochs")
    say(f"        searched values: {json.dumps(searched_values(space, params))}")
    if overrides:
        say(f"        retrained with {' '.join(f'{k}={v}' for k, v in overrides.items())} (the space's retrain.set "
            f"and --set)")
    return params, config


def evidence(out, run, kept, row, infer_z):
    """The submitted weights' validation rollout and the test videos' predictions, written into `out`; returns
    (the validation PSNR per frame, the infer_z used)."""
    say(f"submitting the weights of epoch {kept['epoch']} of {run.epoch} (the best val_psnr of the retraining)")
    with stage("validation rollout"):
        psnr = write_validation(out, run, kept["epoch"], f"trial {row['trial_id']} retrained, epoch {kept['epoch']}")
    z = infer_z or run.config["infer_z"]
    with stage(f"test rollouts, submission.csv and GIFs of {run.dataset.test_first.shape[0]} videos"):
        write_predictions(out, run, z, kept["epoch"])
    return psnr, z


def starting_point(exp, row, trial_dir, space, config, epochs, from_checkpoint, overrides):
    """How the winner is trained again: (config, the checkpoint state to continue or None, a PBT winner's
    per-epoch schedule or None, its lineage's rows or None)."""
    config["num_epoch"] = epochs or config["num_epoch"]
    if from_checkpoint:
        state = best_checkpoint(trial_dir, space.metric, space.mode)
        if space.scheduler in PBT:  # the values PBT had given the checkpoint's trial by then
            config = make_config({**state["config"], **overrides, "num_epoch": config["num_epoch"]})
        config["num_epoch"] = max(config["num_epoch"], state["epoch"])
        say(f"continuing the winner's best checkpoint (epoch {state['epoch']}) to epoch {config['num_epoch']}")
        return config, state, None, None
    if space.scheduler in PBT:
        config, schedule, rows = replay_plan(exp, row, overrides, epochs)
        return config, None, schedule, rows
    return config, None, None, None


def run_best(experiment=None, storage="ray_results", data_dir=None, epochs=None, from_checkpoint=False,
             infer_z=None, out=None, seeds=1, device="auto", overrides=None, wandb=None):
    """Pick the winner of a search (`experiment`: a folder or a URI; default the newest in `storage`), retrain it
    (replay a PBT winner's schedule, or continue its best checkpoint) with `overrides` of its config, validate,
    predict the test videos and write the submission and its evidence into `out` (default EXPERIMENT/best: for a
    URI its local copy's, uploaded beside the experiment). `wandb`: a W&B project, or True for the search's."""
    where, exp = locate(experiment, storage)
    record, row, trial_dir = winner(exp)
    settings = wandb_settings(wandb, record.space)
    if from_checkpoint:
        where.pull_checkpoints(exp.name, trial_dir)
    space = record.space
    overrides = {**space.retrain.get("set", {}), **(overrides or {})}
    epochs = epochs or space.retrain.get("epochs")
    out = Path(out) if out else exp / BEST_DIR
    check_out(out)
    check_writable(out.parent, "--out")
    params, config = winner_config(exp, space, row, trial_dir, overrides)
    config, state, schedule, lineage_rows = starting_point(exp, row, trial_dir, space, config, epochs,
                                                           from_checkpoint, overrides)
    data_root, dataset = search_data(data_dir or record.data_dir)
    torch.set_num_threads(trial_threads(trial_dir, record))
    with staged_output(out) as tmp:
        values, run, kept = retrain(config, dataset, pick_device(device), seeds, state, schedule)
        summary = {"experiment": str(exp), "trial_id": str(row["trial_id"]),
                   "searched": searched_values(space, params), "overrides": overrides}
        if lineage_rows:
            pd.DataFrame(lineage_rows).to_csv(tmp / "schedule.csv", index=False)
            summary["replay"] = {"lineage": row["lineage"], "epochs": len(lineage_rows),
                                 "largest_difference_db": compare_replay(lineage_rows, run)}
        elif state is None:
            compare_with_trial(trial_dir, params, run, space.metric, changed=bool(overrides))
        psnr, z = evidence(tmp, run, kept, row, infer_z)
        summary.update({"epochs": run.config["num_epoch"], "submitted_epoch": kept["epoch"], "infer_z": z,
                        "val_psnr": float(psnr.mean()), "val_psnr_600": scored_mean(psnr),
                        "seeds": {"n": seeds, "best_val_psnr": values, "mean": float(np.mean(values)),
                                  "std": float(np.std(values, ddof=1)) if seeds > 1 else 0.0}})
        if (data_root / "test_truth").is_dir():
            with stage("scoring against test_truth/"):
                summary["score"] = score(tmp / "submission.csv", data_root / "test_truth")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if settings:
        with stage("the W&B run"):
            wandb_log.run_best_run(settings, exp, str(row["trial_id"]), run.history, out, summary)
    if out == exp / BEST_DIR:  # the report shows the retrained winner's PSNR per frame
        with stage(f"report {exp / 'report' / 'index.html'}" + (f" and {BEST_DIR}/, into {where}" if where.remote
                                                                else "")):
            report.write(exp)
            where.push(exp.name, [BEST_DIR, *TABLE_FILES, REPORT_DIR])
    return out, summary


def search_data(data_dir):
    """(folder, decoded dataset) of the search's data, or of --data where it moved."""
    data_root = Path(data_dir)
    if not data_root.is_dir():
        raise UserError(f"{data_root}: the search's dataset is gone; pass --data with its new location")
    with stage("loading the data"):
        return data_root, load_dataset(data_root, progress=TERMINAL)


def wandb_settings(wandb, space):
    """The W&B settings run_best logs with (None: no W&B), checked before any work: `wandb` a project, or True
    for the search's own."""
    if not wandb:
        return None
    wandb_log.check("--wandb")
    settings = dict(space.wandb or {})
    if wandb is not True:
        settings["project"] = wandb
    if not settings.get("project"):
        raise UserError("--wandb: the search logged to no W&B project; name one: --wandb PROJECT")
    return settings


def locate(experiment, storage):
    """(its Storage, the local folder) of the experiment run_best retrains: `experiment` (a folder or a URI), else
    the newest in `storage`; a URI's records come down into its local copy (checkpoints when needed)."""
    if experiment:
        where, name = experiment_at(experiment)
    else:
        where = Storage(storage)
        names = where.experiments()
        if not names:
            raise UserError(f"{where}: no experiment here; run run_search.py first or pass --experiment DIR")
        name = names[0]
    return where, where.pull(name)
