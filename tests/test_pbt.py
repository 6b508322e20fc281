"""Population Based Training: a space's PBT rules, the exploit's mechanics (the donor's weights trained with the
perturbed values), the lineage, run_best.py's replay of the winner, and a PBT search killed and resumed."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import A, B, PBT_QUICK as QUICK, pbt_space, read_trials
from tune_cvae.common import UserError
from tune_cvae.experiment.best import run_best
from tune_cvae.experiment.files import EPOCHS_FILE, trial_results
from tune_cvae.experiment.lineage import lineage, segments, trained_schedule
from tune_cvae.experiment.space import PBT_FIXED, SpaceError
from tune_cvae.experiment.space_yaml import load_space, parse
from tune_cvae.experiment.start import new_experiment
from tune_cvae.lab.train import train
from tune_cvae.search import tuner
from tune_cvae.search.pbt import SyncPB2, SyncPBT

ROOT = Path(__file__).resolve().parent.parent
def test_pbt_spaces_hold_what_pbt_changes_and_refuse_what_cannot_work():
    for name in ("demo_pbt", "kl_tfr_pbt"):
        space = load_space(name)
        assert space.scheduler == "pbt" and space.searcher == "random" and space.mutated == ["kl_beta_max", "tfr",
                                                                                             "lr"]
        assert {k: space.fixed[k] for k in PBT_FIXED} == PBT_FIXED
        assert parse(space.to_dict(), name).to_dict() == space.to_dict()
    bad = [({"searcher": "tpe"}, "searcher: scheduler pbt draws its population at random"),
           ({"budget": 8}, "budget: scheduler pbt trains"),
           ({"pbt": {"quantile": 0.7}}, r"pbt.quantile: must be a number in \(0, 0.5\]"),
           ({"pbt": {"interval": 4}}, "pbt.interval: 4 epochs: more than max_epochs"),
           ({"pbt": {"mutate": ["batch_size"]}}, "pbt.mutate: 'batch_size': PBT changes kl_beta_max"),
           ({"fixed": {"lr_scheduler": "cosine"}}, "fixed.lr_scheduler: under PBT it is none")]
    for changes, message in bad:
        with pytest.raises(SpaceError, match=message):
            parse(pbt_space(**changes), "p.yaml")
    raw = pbt_space()
    raw["params"]["kl_anneal_type"] = {"type": "categorical", "choices": ["Cyclical", "None"]}
    with pytest.raises(SpaceError, match="params.kl_anneal_type: under PBT"):
        parse(raw, "p.yaml")


def test_flags_that_pbt_cannot_follow_are_one_line(tmp_path, builtin_root):
    with pytest.raises(SpaceError, match="with the flags: searcher"):
        new_experiment("demo_pbt", str(builtin_root), "x", tmp_path, 0, {"searcher": "tpe"})
    with pytest.raises(UserError, match="--warm-start: scheduler pbt draws its population at random"):
        new_experiment("demo_pbt", str(builtin_root), "x", tmp_path, 0, warm_start=str(tmp_path))
    with pytest.raises(SpaceError, match="pbt.mutate: 'tfr' must be a float parameter .* demo_pbt.yaml"):
        new_experiment("demo", str(builtin_root), "x", tmp_path, 0, {"scheduler": "pbt"})


def test_an_exploit_trains_the_donors_weights_with_its_own_values(short_val):
    """What the trainable does at an exploit, without Ray: X continues D's checkpoint with perturbed values. Its
    first step's MSE (before any update) is D's own at that epoch, not a fresh model's; the lr, KL weight and
    teacher-forcing ratio it records (those its steps used) are its own, not the ones in D's optimiser state."""
    _, d = train({**QUICK, **A, "num_epoch": 2}, short_val, name="D")
    state = d.state()
    _, x = train({**QUICK, **B, "num_epoch": 3}, short_val, state=state, name="X")
    _, d3 = train({**QUICK, **A, "num_epoch": 3}, short_val, state=state, name="D")
    fresh, donor, mine = d.history[0], d3.history[2], x.history[2]
    assert mine["first_mse"] == pytest.approx(donor["first_mse"], rel=1e-6)
    assert abs(mine["first_mse"] - fresh["first_mse"]) > 1e-4
    assert (mine["lr"], mine["beta"], mine["tfr"]) == pytest.approx((B["lr"], B["kl_beta_max"], B["tfr"]))
    assert [h["trained_by"] for h in x.history] == ["D", "D", "X"] and lineage(x.history) == "D:1-2 X:3-3"


def test_a_schedule_replayed_from_scratch_reproduces_the_lineage(short_val):
    """run_best's replay: one run from scratch following the per-epoch values of D then X gives the val_psnr
    those two trials recorded, epoch by epoch, within 0.3 dB (on one machine: exactly)."""
    _, d = train({**QUICK, **A, "num_epoch": 2}, short_val, name="D")
    _, x = train({**QUICK, **B, "num_epoch": 3}, short_val, state=d.state(), name="X")
    _, replay = train({**QUICK, **B, "num_epoch": 3}, short_val, schedule=[A, A, B])
    recorded = [h["val_psnr"] for h in x.history]
    assert [h["val_psnr"] for h in replay.history] == pytest.approx(recorded, abs=0.3)
    assert [h["lr"] for h in replay.history] == pytest.approx([A["lr"], A["lr"], B["lr"]])


@pytest.fixture(scope="module")
def pbt(ray_cluster, builtin_root, tmp_path_factory):
    """A finished tiny PBT search (two trials on the two one-CPU nodes): its experiment folder."""
    folder = tmp_path_factory.mktemp("pbt")
    (folder / "pbt.yaml").write_text(yaml.safe_dump(pbt_space()))
    return tuner.run(str(folder / "pbt.yaml"), data_dir=str(builtin_root), storage=folder, name="pbt",
                      dashboard=False, verbose=0)


def epochs_of(exp):
    """{trial id: {epoch: the row it recorded}}."""
    return {d.name.removeprefix("trial_"): {r["epoch"]: r for r in trial_results(d)}
            for d in exp.glob("trial_*")}


def upto(text, epoch):
    """A lineage's segments cut at `epoch`: who trained the weights up to then."""
    return [(who, first, min(last, epoch)) for who, first, last in segments(text) if first <= epoch]


def test_a_pbt_search_exploits_with_copied_weights_and_perturbed_values(pbt):
    """The failures Ray's tracker knows, each caught here: an exploit that restarts from scratch (ray#27170), the
    wrong checkpoint loaded (ray PR #28509), perturbed values ignored after the restore (ray#54755, #62173)."""
    rows = epochs_of(pbt)
    exploits = {(after[0], before[2], before[0])  # (who took the weights, after which epoch, from whom)
                for by_epoch in rows.values() for r in by_epoch.values()
                for before, after in zip(segments(r["lineage"]), segments(r["lineage"])[1:])}
    assert exploits, rows
    fresh = rows[next(iter(rows))][1]["first_mse"]  # every trial starts from the same seed's weights
    compared = 0
    for x, k, d in exploits:
        mine, theirs = rows[x][k + 1], rows[d][k + 1]
        assert upto(mine["lineage"], k)[-1][0] == d and mine["epoch"] == k + 1  # went on from epoch k, not 0
        assert abs(mine["first_mse"] - fresh) > 1e-4  # not a fresh model
        if upto(theirs["lineage"], k) == upto(mine["lineage"], k):  # the donor went on with those weights too
            assert mine["first_mse"] == pytest.approx(theirs["first_mse"], rel=1e-6)
            assert (mine["lr"], mine["beta"], mine["tfr"]) != pytest.approx((theirs["lr"], theirs["beta"],
                                                                             theirs["tfr"]))  # perturbed
            compared += 1
    assert compared
    for by_epoch in rows.values():
        for r in by_epoch.values():  # what each epoch's steps used is what PBT had set
            assert (r["lr"], r["beta"], r["tfr"]) == pytest.approx(
                (r["config"]["lr"], r["config"]["kl_beta_max"], r["config"]["tfr"]))


def test_trials_csv_and_the_report_show_the_lineage_and_the_learned_schedule(pbt):
    table = read_trials(pbt / "trials.csv", keep_default_na=False)
    assert {"lineage", "exploits"} <= set(table.columns) and table.exploits.max() >= 1
    for row in table.itertuples():
        assert segments(row.lineage)[-1][0] == row.trial_id
    index = (pbt / "report" / "index.md").read_text()
    assert "Population Based Training (PBT): 2 trials" in index and "## Schedule learned by PBT" in index
    assert (pbt / "report" / "pbt_schedule.png").stat().st_size > 10_000


def test_run_best_replays_the_pbt_winner_and_submits(pbt, tmp_path):
    out, summary = run_best(pbt, out=tmp_path / "best")
    assert summary["replay"]["epochs"] == 3 and summary["replay"]["largest_difference_db"] <= 0.3
    assert summary["replay"]["lineage"] == read_trials(pbt / "trials.csv").lineage[0]
    assert "score" in summary and (out / "submission.csv").is_file() and (out / "schedule.csv").is_file()


def test_run_best_says_when_a_lineage_cannot_be_replayed(pbt, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(pbt, copy)
    winner = read_trials(copy / "trials.csv").iloc[0]
    donor = next(who for who, _, _ in segments(winner.lineage) if who != winner.trial_id)
    (copy / f"trial_{donor}" / EPOCHS_FILE).unlink()
    (copy / f"trial_{donor}" / "result.json").unlink()
    with pytest.raises(UserError, match=f"cannot replay the winner's lineage: trial {donor}: .*--from-checkpoint"):
        run_best(copy, out=tmp_path / "best")
    assert not (tmp_path / "best").exists()


def test_a_pbt_search_killed_with_sigkill_resumes(ray_cluster, builtin_root, tmp_path):
    (tmp_path / "pbt.yaml").write_text(yaml.safe_dump(pbt_space()))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    with open(tmp_path / "stderr.txt", "w") as f:
        proc = subprocess.Popen([sys.executable, "run_search.py", "--space", str(tmp_path / "pbt.yaml"), "--data",
                                 str(builtin_root), "--storage", str(tmp_path), "--name", "k"], env=env,
                                stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 300
    while sum(len(p.read_text().splitlines()) for p in tmp_path.glob(f"k/trial_*/{EPOCHS_FILE}")) < 2 \
            or not list(tmp_path.glob("k/experiment_state-*.json")):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr.txt").read_text()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    exp = tuner.run(None, resume=True, name="k", storage=tmp_path, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    assert list(table.status) == ["finished", "finished"] and list(table.epochs) == [3, 3]
    for row in table.itertuples():  # every lineage still reads back to epoch 1
        assert [r["epoch"] for r in trained_schedule(exp, row.trial_id, 3)] == [1, 2, 3]
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def test_pb2_and_pbt_are_synchronous_on_the_epoch_within_the_mutated_ranges():
    pb2 = tuner.make_scheduler(parse(pbt_space(scheduler="pb2"), "p.yaml"))
    assert isinstance(pb2, SyncPB2) and pb2._synch and pb2._time_attr == "epoch"
    assert pb2._hyperparam_bounds == {"kl_beta_max": [1e-4, 1.0], "tfr": [0.0, 1.0], "lr": [1e-4, 5e-3]}
    pbt = tuner.make_scheduler(parse(pbt_space(), "p.yaml"))
    assert isinstance(pbt, SyncPBT) and pbt._perturbation_interval == 1
    assert pbt._custom_explore_fn({"kl_beta_max": 2.0, "tfr": 1.2, "lr": 1e-5}) == {"kl_beta_max": 1.0, "tfr": 1.0,
                                                                                     "lr": 1e-4}
