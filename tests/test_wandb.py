"""Weights & Biases: optional, checked before any work, one offline run per trial with its config, every epoch's
metrics and image strip and its ending, the search's table, run_best's run with the submission; read back from
W&B's offline files."""
import glob
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BLOCK, HEADER = 32768, 7  # W&B's offline files: a LevelDB-style log of protobuf records in 32 KiB blocks


def records(path):
    """The protobuf records of one offline run file."""
    from wandb.proto import wandb_internal_pb2
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # no room for a record header: the rest of the block is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:
            pos += BLOCK - pos % BLOCK
            continue
        payload, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        parts = payload if kind in (1, 2) else parts + payload  # full, first / middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def offline_runs(folder):
    """{run id: {"config", "history" (one dict per step), "summary", "artifacts", "group", "folders"}}, the offline
    run folders of one run id (a resumed run has several; the id is the end of the folder's name) merged. W&B
    buffers its records: a folder whose writer was killed may hold none of them."""
    def key(item):
        return "/".join(item.nested_key) or item.key
    runs = {}
    for path in sorted(glob.glob(f"{folder}/wandb/offline-run-*/run-*.wandb")):
        run = runs.setdefault(Path(path).parent.name.split("-", 3)[3], {
            "config": {}, "history": [], "summary": {}, "artifacts": [], "group": None, "folders": 0})
        run["folders"] += 1
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["config"].update({key(i): json.loads(i.value_json) for i in record.run.config.update})
                run["group"] = record.run.run_group
            elif kind == "history":
                run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                run["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
            elif kind == "artifact":
                run["artifacts"].append((record.artifact.type, [e.path for e in record.artifact.manifest.contents]))
    return runs


def without_wandb(tmp_path):
    """An environment in which `import wandb` fails, as where it is not installed."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize("script", ["run_search.py", "run_best.py"])
def test_without_wandb_installed_the_flag_is_one_line_before_any_work(tmp_path, script):
    args = ["--space", "smoke", "--storage", str(tmp_path / "rr"), "--wandb", "p"] if script == "run_search.py" \
        else ["--experiment", str(make_finished(tmp_path)), "--wandb", "p"]
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT,
                          env=without_wandb(tmp_path), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --wandb: W&B is not installed here: make wandb (or: pip install wandb)"
    assert not (tmp_path / "rr").exists() and not list(tmp_path.glob("**/best"))


def make_finished(tmp_path):
    from helpers import make_experiment
    return make_experiment(tmp_path / "exp")


def test_online_without_a_key_is_one_line_naming_what_to_set(tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--storage", str(tmp_path / "rr"),
                           "--wandb", "p"], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "HOME": str(tmp_path), "WANDB_MODE": "online"}, timeout=300)
    assert proc.returncode == 2 and "no W&B key here: run `wandb login`, set WANDB_API_KEY" in proc.stderr
    assert not (tmp_path / "rr").exists()


def test_a_resumed_trial_logs_its_recorded_epochs_again_which_a_killed_driver_had_not_yet_written(tmp_path,
                                                                                                  monkeypatch):
    """A driver killed with SIGKILL loses the history W&B still buffered (its offline file then holds only a
    header): the run a resumed trial continues gets its recorded epochs up to its checkpoint again."""
    pytest.importorskip("wandb")
    from types import SimpleNamespace
    from tune_cvae.experiment.space_yaml import load_space
    from tune_cvae.experiment.storage import Storage
    from tune_cvae.search.wandb_runs import WandbRuns
    monkeypatch.setenv("WANDB_MODE", "offline")
    exp = tmp_path / "k"
    (exp / "trial_abc").mkdir(parents=True)
    (exp / "trial_abc/epochs.jsonl").write_text("".join(json.dumps({"epoch": e, "val_psnr": 10.0 + e, "loss": 1.0 / e})
                                                        + "\n" for e in (1, 2, 3)))
    space = load_space("smoke")
    trial = SimpleNamespace(trial_id="abc", config={"lr": 2e-3, "tfr_d_step": 0.5, "kl_anneal_type": "None"},
                            last_result={"epoch": 2})  # restored: its checkpoint is epoch 2's
    callback = WandbRuns({"project": "tune-cvae"}, Storage(tmp_path), exp, space)
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, {"epoch": 3, "val_psnr": 13.5})
    callback.end(trial, "finished")
    import wandb
    wandb.teardown()  # run.finish() may return before W&B's own process has written the offline file
    run = next(iter(offline_runs(exp).values()))
    assert [(h["_step"], h["val_psnr"]) for h in run["history"]] == [(1, 11.0), (2, 12.0), (3, 13.5)]


@pytest.mark.slow
def test_an_offline_search_has_a_run_per_trial_its_ending_a_table_and_run_bests_submission(ray_cluster, builtin_root,
                                                                                           tmp_path, monkeypatch):
    """Four trials (one diverging, ASHA stopping some), killed with SIGKILL after a first epoch and resumed: every
    trial's run has its config, every epoch's val_psnr, an image strip and its ending; a resumed trial went on
    in its own run; the search's run holds the table; run_best.py --wandb adds its run and the submission."""
    pytest.importorskip("wandb")
    from helpers import read_trials
    from tune_cvae.experiment.best import run_best
    from tune_cvae.search import tuner
    raw = yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())
    raw["num_samples"], raw["params"]["lr"]["high"] = 4, 1.0e6
    raw["points_to_evaluate"] = [{"kl_anneal_type": "None", "tfr_d_step": 0.5, "lr": lr} for lr in (2e-3, 1e6, 5e-3,
                                                                                                  8e-3)]
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},  # W&B's process, not this one's
           "RAY_ADDRESS": ray_cluster.address, "WANDB_MODE": "offline"}  # (whose run ids a killed driver holds)
    monkeypatch.setenv("WANDB_MODE", "offline")
    proc = subprocess.Popen([sys.executable, "run_search.py", "--space", str(tmp_path / "w.yaml"), "--data",
                             str(builtin_root), "--storage", str(tmp_path), "--name", "w", "--wandb", "tune-cvae"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp, deadline = tmp_path / "w", time.time() + 300
    while not any(json.loads(line).get("val_psnr") == json.loads(line).get("val_psnr")  # a finite first epoch
                  for f in exp.glob("trial_*/epochs.jsonl") for line in f.read_text().splitlines()):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    tuner.run(None, resume=True, name="w", storage=tmp_path, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    assert set(table.status) >= {"diverged (NaN)", "finished"} and len(table) == 4
    runs = offline_runs(exp)
    trials = {r["config"]["trial_id"]: r for r in runs.values() if "trial_id" in r["config"]}
    forgotten = {p.name.removeprefix("trial_") for p in (exp / "forgotten").glob("trial_*")}  # started unsaved
    assert set(table.trial_id) <= set(trials) <= set(table.trial_id) | forgotten
    assert {r["group"] for r in runs.values() if r["group"] is not None} == {"w"}  # None: a killed, unflushed run
    for row in table.itertuples():
        run = trials[row.trial_id]
        assert run["config"]["searched"] == ["kl_anneal_type", "tfr_d_step", "lr"] and run["config"]["num_epoch"] == 3
        assert run["summary"]["ending"] == row.status
        epochs = {h["_step"] for h in run["history"] if "val_psnr" in h}
        assert epochs == set(range(1, row.epochs + 1)) or row.status == "diverged (NaN)", (row, run["history"])
        if row.status != "diverged (NaN)":
            assert any(h.get("val/frames/_type") == "image-file" for h in run["history"])
    assert max(r["folders"] for r in trials.values()) >= 2  # a trial cut by the kill went on in its own run
    search = next(r for i, r in runs.items() if i.endswith("-search"))
    assert any(h.get("trials/_type") == "table-file" and h.get("trials/nrows") == 4 for h in search["history"])
    _, summary = run_best(experiment=exp, epochs=1, wandb=True)
    runs = offline_runs(exp)
    best = next(r for i, r in runs.items() if i.endswith(f"run_best-{summary['trial_id']}"))
    assert best["config"]["winning_trial_run"].endswith(summary["trial_id"])
    assert ("submission", ["config.yaml", "submission.csv", "summary.json"]) in [
        (kind, sorted(files)) for kind, files in best["artifacts"]]
    assert {h["_step"] for h in best["history"] if "val_psnr" in h} == {1}
