"""End-to-end searches on a two-node local Ray cluster (the session's ray_cluster fixture)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from helpers import make_experiment, read_trials
from optuna.trial import TrialState
from tune_cvae.common import UserError
from tune_cvae.experiment import space_yaml
from tune_cvae.experiment.ending import check_some_trial_worked
from tune_cvae.experiment.files import study_storage, trial_results
from tune_cvae.experiment.start import warn_cpu_duration
from tune_cvae.experiment.tables import collect
from tune_cvae.search import tuner
from tune_cvae.search.session import plan_resources

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # every test here starts searches on a Ray cluster


def ray_results(exp):
    """Each trial folder's result.json as Ray wrote it."""
    return {d.name: [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line]
            for d in exp.glob("trial_*") if (d / "result.json").is_file()}


def test_smoke_search_asha_stops_some_trials_and_writes_tables(smoke):
    table = read_trials(smoke / "trials.csv")
    assert len(table) >= 6
    assert set(table.status) <= {"finished", "stopped early"}
    assert (table.status == "stopped early").any() and (table.status == "finished").any()
    assert (table.epochs[table.status == "finished"] == 3).all()
    assert (table.epochs[table.status == "stopped early"] < 3).all()
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert table.best_val_psnr.is_monotonic_decreasing
    for name in ("trials.md", "trials.html"):
        assert "kl_anneal_type" in (smoke / name).read_text()
    assert "By KL-annealing type" in (smoke / "trials.md").read_text()


def test_conditional_parameter_only_in_cyclical_trials(smoke):
    table = read_trials(smoke / "trials.csv")
    cyclical = table.kl_anneal_type == "Cyclical"
    assert table.kl_anneal_cycle[cyclical].notna().all()
    assert table.kl_anneal_cycle[~cyclical].isna().all()


def test_trials_ran_on_both_nodes_from_the_shared_dataset(smoke):
    nodes = {r["node_id"] for results in ray_results(smoke).values() for r in results}
    assert len(nodes) == 2


def test_tensorboard_has_one_run_per_trial_named_by_its_values_and_the_optuna_study(smoke):
    for trial_dir in smoke.glob("trial_*"):
        runs = {p.parent for p in trial_dir.rglob("events.out.tfevents.*")}
        assert len(runs) == 1, runs  # the trainable's; Ray's own TensorBoard logger is off
        run, = runs
        params = json.loads((trial_dir / "params.json").read_text())
        assert run.name.startswith(trial_dir.name.removeprefix("trial_")) and f"lr={params['lr']:.3g}" in run.name
    storage = JournalStorage(JournalFileBackend(str(smoke / "optuna.journal")))
    study = optuna.load_study(study_name="smoke", storage=storage)
    assert len(study.trials) == len(read_trials(smoke / "trials.csv"))


def test_optuna_study_tells_what_asha_did(smoke):
    """Stopped trials are PRUNED with their learning curve, finished ones COMPLETE with the value trials.csv
    ranks by; each Optuna trial names its Ray trial, so optuna-dashboard and trials.csv agree."""
    study = optuna.load_study(study_name="smoke", storage=JournalStorage(JournalFileBackend(
        str(smoke / "optuna.journal"))))
    assert study.metric_names == ["val_psnr"]
    table = read_trials(smoke / "trials.csv").set_index("trial_id")
    states = {}
    for t in study.trials:
        row = table.loc[t.user_attrs["ray_trial_id"]]
        states[t.state] = states.get(t.state, 0) + 1
        if row.status == "diverged (NaN)":  # at the worst value any trial had reported; the NaN epoch not told
            assert (t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["diverged"]) or \
                t.state == optuna.trial.TrialState.FAIL  # before any trial had reported a finite value
            assert sorted(t.intermediate_values) == list(range(1, row.epochs))
            continue
        assert sorted(t.intermediate_values) == list(range(1, row.epochs + 1))
        assert max(t.intermediate_values.values()) == pytest.approx(row.best_val_psnr)
        if row.status == "finished":
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(row.best_val_psnr)
        else:
            assert row.status == "stopped early" and t.state == optuna.trial.TrialState.PRUNED
    assert states[optuna.trial.TrialState.PRUNED] >= 1 and states[optuna.trial.TrialState.COMPLETE] >= 1


def test_without_an_address_a_search_starts_a_session_of_its_own_beside_a_cluster_on_this_machine(ray_cluster):
    """A cluster running here (ray start, or this session's test cluster) leaves its address file in /tmp/ray;
    Ray's ray.init() would join it and refuse --cpus. Without --address the search gets its own session."""
    from ray._common.utils import get_ray_address_file
    assert Path(get_ray_address_file(None)).read_text() == ray_cluster.gcs_address  # the cluster it must not join
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = ("import ray; from tune_cvae.search.session import start_ray; start_ray(num_cpus=1, dashboard=False); "
            "print(ray.cluster_resources()['CPU'], len(ray.nodes())); ray.shutdown()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1.0", "1"]  # the test cluster has two nodes of one CPU each


def test_gpu_over_request_fails_before_any_trial(ray_cluster, builtin_root, tmp_path):
    with pytest.raises(UserError, match="--gpus 4: Ray sees 0 GPU"):
        plan_resources(4, None, 1, 6)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--gpus", "4", "--data",
                           str(builtin_root), "--storage", str(tmp_path / "rr")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --gpus 4: Ray sees 0 GPU")
    assert "Traceback" not in proc.stderr and not (tmp_path / "rr").exists()


def test_the_console_shows_one_status_table_and_the_next_command(ray_cluster, builtin_root, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--samples", "3", "--data",
                           str(builtin_root), "--storage", str(tmp_path), "--name", "c"], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Trial status" not in proc.stdout and "Trial train_trial" not in proc.stdout  # no Ray boxes
    tables = proc.stdout.count("trials started:")
    assert tables >= 3  # one as each trial ended
    header = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("trial_id"))
    assert all(col in header for col in ("status", "last val_psnr", "best val_psnr", "kl_anneal_type", "lr"))
    assert "stopped early (ASHA, epoch" in proc.stdout or "finished" in proc.stdout
    assert f"next: python run_best.py --experiment {tmp_path / 'c'}" in proc.stderr
    assert (tmp_path / "c" / "report" / "index.html").is_file()


def start_search(ray_cluster, builtin_root, storage, name, samples=3, max_epochs=3):
    """run_search.py on the smoke space in a process of its own, once its first trial's result is in storage: (the
    process, its stderr file). Ray copies results there only with a later checkpoint, and a signal takes some
    seconds to stop the trials: by then they are a few epochs further."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    err = storage.parent / f"{name}-stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--samples", str(samples),
                                 "--max-epochs", str(max_epochs), "--data", str(builtin_root), "--storage",
                                 str(storage), "--name", name], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 300
    while not any(p.stat().st_size for p in storage.glob(f"{name}/trial_*/result.json")):
        assert proc.poll() is None and time.time() < deadline, "search ended before any trial reported"
        time.sleep(0.5)
    return proc, err


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_resume_an_interrupted_search(ray_cluster, builtin_root, tmp_path, signum, status):
    """Ctrl-C, or the SIGTERM a batch scheduler or `timeout` sends, ends a search with its table and the command
    that continues it; no stack dump."""
    proc, err = start_search(ray_cluster, builtin_root, tmp_path, "r", max_epochs=9)  # ASHA's rungs: 1, 3, 9
    proc.send_signal(signum)
    proc.wait(timeout=120)
    before = ray_results(tmp_path / "r")
    assert max(len(r) for r in before.values()) < 9  # it really was cut short
    stderr = err.read_text()
    assert proc.returncode == status, stderr
    assert f"continue it with: python run_search.py --resume --name r --storage {tmp_path}" in stderr
    assert "Tuner.restore" not in stderr and "Traceback" not in stderr and "core dumped" not in stderr
    assert "interrupted" in set(read_trials(tmp_path / "r/trials.csv").status)  # not "stopped early"
    exp = tuner.run(None, resume=True, name="r", storage=tmp_path, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    assert len(table) == 3 and set(table.status) <= {"finished", "stopped early"}
    for name in before:  # interrupted trials continued from their checkpoints; the report has each epoch once
        epochs = [r["epoch"] for r in trial_results(exp / name)]
        assert epochs == list(range(1, len(epochs) + 1)), (epochs, ray_results(exp)[name])


def test_a_search_whose_trials_all_diverged_goes_on_and_fails(ray_cluster, builtin_root, tmp_path, recwarn):
    """With metric: loss, a trial that diverges in its first epoch still reports loss (NaN): Ray does not abort
    the search for a missing metric; at the end, no usable trial is an error, not success, and no numpy warning
    from ASHA's all-NaN rungs reaches the user's terminal."""
    space = yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())
    space.update(metric="loss", mode="min", num_samples=2, max_epochs=2, points_to_evaluate=[],
                 params={"lr": {"type": "float", "low": 1.0e6, "high": 1.0e7, "log": True}})
    (tmp_path / "diverge.yaml").write_text(yaml.safe_dump(space))
    with pytest.raises(UserError, match="no trial finished an epoch with a finite loss \\(2 diverged"):
        tuner.run(str(tmp_path / "diverge.yaml"), data_dir=str(builtin_root), storage=tmp_path, name="d",
                   dashboard=False, verbose=0)
    assert list(read_trials(tmp_path / "d/trials.csv").status) == ["diverged (NaN)"] * 2
    assert not [w for w in recwarn if "All-NaN" in str(w.message)]


def test_resume_without_a_search_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no search to resume"):
        tuner.run(None, resume=True, name="nothing", storage=tmp_path)


def test_local_gpu_over_request_fails_before_reading_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--gpus", "64", "--data",
                           str(tmp_path / "not_read"), "--storage", str(tmp_path / "rr")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2 and not (tmp_path / "rr").exists()
    n = torch.cuda.device_count()
    assert proc.stderr.strip() == f"error: --gpus 64: this machine has {n} GPU(s) visible to torch; use --gpus {n} " \
                                  "(0 trains on CPUs)"


def _own_lines(err):
    """stderr without what Ray forwards from its processes ("(raylet) ...", "(pid=...) ...", ANSI-coloured)."""
    lines = (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in err.splitlines())
    return [line for line in lines if line.strip() and not line.startswith("(")]


def test_a_template_size_search_on_cpus_warns_with_a_duration_timed_here(builtin, capsys):
    from tune_cvae.experiment.space_yaml import load_space
    warn_cpu_duration(load_space("kl_tfr.yaml"), {"cpu": 1, "gpu": 0}, builtin, 2)
    [line] = _own_lines(capsys.readouterr().err)
    assert line.startswith("warning: kl_tfr.yaml trains the template-size model on CPUs")
    rate = float(re.search(r"480 frames at ([0-9.]+) frames/s, timed now with 1 thread", line).group(1))
    hours = float(re.search(r"up to ([0-9]+) hours", line).group(1))

    def hours_at(r):  # trials x epochs x frames / frames per second / 2 at a time
        return 32 * 70 * 480 / r / 2 / 3600

    assert 0.05 < rate and hours_at(rate + 0.05) - 0.5 <= hours <= hours_at(rate - 0.05) + 0.5  # both rounded
    assert "hours for 32 trials x 70 epochs, 2 at a time" in line and "--gpus N" in line
    warn_cpu_duration(load_space("kl_tfr.yaml"), {"cpu": 1, "gpu": 1}, builtin, 2)
    warn_cpu_duration(load_space("demo.yaml"), {"cpu": 1, "gpu": 0}, builtin, 2)
    assert _own_lines(capsys.readouterr().err) == []  # on GPUs, or a CPU-sized model: no warning



def _unlocks(space, name, choice):
    """How many parameters switch on when parameter `name` takes `choice`."""
    allowed = [p.get("when", {}).get(name) for p in space.params.values() if name in p.get("when", {})]
    return sum(choice in (a if isinstance(a, list) else [a]) for a in allowed)


def longest_point(space):
    """The start point whose trial label is longest: every condition switched on (Cyclical with cycle and ratio,
    AdamW with weight decay, teacher forcing with start and decay), the longest choice and number of each."""
    from tune_cvae.experiment.space import short
    point = {}
    for name, p in space.params.items():
        if not space.active(name, point):
            continue
        if p["type"] == "categorical":
            point[name] = max(p["choices"], key=lambda c: (_unlocks(space, name, c), len(short(c))))
        else:
            numbers = [p["low"], p["high"]] + [m * 10.0 ** e for e in range(-8, 4) for m in (1.23, 9.87)]
            numbers = [int(v) if p["type"] == "int" else v for v in numbers if p["low"] <= v <= p["high"]]
            point[name] = max(numbers, key=lambda v: len(short(v)))
    return point


@pytest.mark.parametrize("space_file", ["demo.yaml", "kl_tfr.yaml"])
def test_a_trial_with_the_longest_values_a_space_allows_trains(ray_cluster, builtin_root, tmp_path, space_file):
    """Every name derived from a trial's values (its TensorBoard run folder, its Ray actor) stays within the file
    system's limits: the trial with the longest label the space allows trains like any other."""
    raw = yaml.safe_load((ROOT / "search_spaces" / space_file).read_text())
    tiny = {k: v for k, v in yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())["fixed"].items()
            if k not in raw["params"]}
    raw.update(num_samples=1, max_epochs=1, grace_period=1, fixed=tiny, points_to_evaluate=[])
    raw["points_to_evaluate"] = [longest_point(space_yaml.parse(raw, space_file))]
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    exp = tuner.run(str(tmp_path / "long.yaml"), data_dir=str(builtin_root), storage=tmp_path, name="long",
                     dashboard=False, verbose=0)
    assert not list(exp.glob("trial_*/error.txt"))
    table = read_trials(exp / "trials.csv")
    assert list(table.status) == ["finished"]
    run, = {p.parent for p in exp.rglob("events.out.tfevents.*")}
    assert run.name.startswith(table.trial_id[0]) and run.name.endswith("...")


def test_a_search_where_some_trials_errored_says_how_many_and_where(tmp_path, capsys):
    """A trial that errors is the project's bug, not the user's input (the space was checked before Ray started):
    the search still ends with its table, and a warning line counts the errored trials and names the first
    error file."""
    exp = make_experiment(tmp_path / "exp")
    check_some_trial_worked(exp, collect(exp), "val_psnr")
    [line] = _own_lines(capsys.readouterr().err)
    assert line == f"warning: 1 of 4 trials errored; first error in {exp / 'trial_d4/error.txt'}: boom"


def test_a_read_only_storage_is_refused_before_ray_starts(tmpfs, builtin_root):
    storage = tmpfs("ro", "1m", read_only=True) / "rr"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--data", str(builtin_root),
                           "--storage", str(storage)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: --storage {storage}: cannot write there (Read-only file system)"


def test_a_disk_filling_during_a_search_ends_it_in_one_line_and_resume_finishes_it(ray_cluster, builtin_root,
                                                                                     tmpfs):
    """The search stops while the disk still holds its last state (StorageGuard), says so in one line with the
    table and the resume command; once space is freed, --resume finishes every trial."""
    disk = tmpfs("disk", "96m")
    proc, err = start_search(ray_cluster, builtin_root, disk, "f", samples=4)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - (6 << 20)))  # another program fills the disk
    proc.wait(timeout=300)
    out = err.read_text()
    assert proc.returncode == 1, out
    assert f"{disk / 'f'}: no space left for the search (" in out and "Traceback" not in out
    assert f"free space, then continue it with: python run_search.py --resume --name f --storage {disk}" in out
    assert "trials by val_psnr" in out  # the table of what finished
    filler.unlink()
    exp = tuner.run(None, resume=True, name="f", storage=disk, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    assert len(table) == 4 and set(table.status) <= {"finished", "stopped early"}


def _interrupted_search(ray_cluster, builtin_root, storage, name, *flags):
    """run_search.py in a process of its own, Ctrl-C once its first trial has reported; returns its exit status."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--data", str(builtin_root),
                             "--storage", str(storage), "--name", name, *flags], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(p.stat().st_size for p in storage.glob(f"{name}/trial_*/result.json")):
        assert proc.poll() is None and time.time() < deadline, "search ended before any trial reported"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_a_warm_started_search_holds_the_earlier_trials_once_and_resumes(ray_cluster, builtin_root, smoke, tmp_path):
    status = _interrupted_search(ray_cluster, builtin_root, tmp_path, "w", "--warm-start", str(smoke),
                                 "--samples", "3")
    assert status == 130
    exp = tuner.run(None, resume=True, name="w", storage=tmp_path, dashboard=False, verbose=0)
    study = optuna.load_study(study_name="w", storage=study_storage(exp))
    earlier = optuna.load_study(study_name="smoke", storage=study_storage(smoke))
    warm = [t for t in study.trials if "warm_start_from" in t.user_attrs]
    assert len(warm) == len([t for t in earlier.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    assert len(study.trials) == len(warm) + 3 and len(read_trials(exp / "trials.csv")) == 3
    assert yaml.safe_load((exp / "search.yaml").read_text())["warm_start"] == str(Path(smoke).resolve())


@pytest.mark.slow
def test_run_search_flags_choose_the_strategy_and_the_budget(ray_cluster, builtin_root, tmp_path):
    """--searcher random --scheduler none --budget 3 over smoke.yaml (TPE + ASHA, 6 trials): the flags win, the
    search ends on its budget (exit 0, not an interruption), and search.yaml and the report say what ran."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--data", str(builtin_root),
                           "--storage", str(tmp_path), "--name", "f", "--searcher", "random", "--scheduler", "none",
                           "--budget", "3"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = yaml.safe_load((tmp_path / "f" / "search.yaml").read_text())["space"]
    assert (recorded["searcher"], recorded["scheduler"], recorded["budget"]) == ("random", "none", 3)
    table = read_trials(tmp_path / "f" / "trials.csv")
    assert 3 <= table["epochs"].sum() <= 4 and len(table) < 6  # 2 trials at a time: one may finish its epoch
    assert "interrupted" not in set(table["status"]) and "continue it with" not in proc.stderr
    assert "random sampling, no early stopping, until they had trained 3 epochs in all" in \
        (tmp_path / "f" / "report" / "index.md").read_text()


def _first_tell_heard(journal_dir, name):
    """Has the study in `journal_dir` heard the end of a trial (COMPLETE, PRUNED or FAIL)?"""
    if not (journal_dir / "optuna.journal").is_file():
        return False
    study = optuna.load_study(study_name=name, storage=study_storage(journal_dir))
    return any(t.state.is_finished() for t in study.get_trials(deepcopy=False))


@pytest.mark.parametrize("moment", ["before the first report", "right after the first tell"])
def test_a_search_killed_with_sigkill_at_any_moment_resumes_to_every_trial_done(ray_cluster, builtin_root,
                                                                                  tmp_path, moment):
    """The searcher's saved state is older than the append-only journal after a kill; --resume goes by the
    journal (a trial told after the last save is not told again) and ends with every trial done."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    with open(tmp_path / "stderr.txt", "w") as f:
        proc = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--samples", "4", "--data",
                                 str(builtin_root), "--storage", str(tmp_path), "--name", "k"], env=env, cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT)
    exp, deadline = tmp_path / "k", time.time() + 300
    while not (list(exp.glob("searcher-state-*.pkl")) and (moment.startswith("before") or
                                                           _first_tell_heard(exp, "k"))):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr.txt").read_text()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    tuner.run(None, resume=True, name="k", storage=tmp_path, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    assert len(table) == 4 and set(table.status) <= {"finished", "stopped early"}, table
    study = optuna.load_study(study_name="k", storage=study_storage(exp))
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    told = [t.user_attrs["ray_trial_id"] for t in study.trials if t.state != TrialState.FAIL]
    assert sorted(told) == sorted(table.trial_id)  # each trial told once, lost asks FAIL


def _state_names_a_running_trials_checkpoint(exp):
    """Does Ray's newest saved state hold a running trial that reported (each report saves a checkpoint)?"""
    states = sorted(exp.glob("experiment_state-*.json"))
    try:
        trials = json.loads(states[-1].read_text())["trial_data"] if states else []
    except ValueError:  # being written
        return False
    return any(json.loads(trial)["status"] == "RUNNING" and json.loads(run)["last_result"].get("epoch")
               for trial, run in trials)


def test_a_trial_whose_recorded_checkpoint_is_gone_from_storage_starts_again_on_resume(ray_cluster, builtin_root,
                                                                                      tmp_path):
    """Ray deletes a trial's older checkpoints as it saves newer ones (num_to_keep) and snapshots its own state
    only now and then: a driver killed in between leaves a state naming a deleted checkpoint. Here every
    checkpoint is gone: --resume trains that trial again from its first epoch, and every trial ends done."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.Popen([sys.executable, "run_search.py", "--space", "smoke", "--samples", "3", "--scheduler",
                             "none", "--data", str(builtin_root), "--storage", str(tmp_path), "--name", "g"], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp, deadline = tmp_path / "g", time.time() + 300
    while not _state_names_a_running_trials_checkpoint(exp):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert _state_names_a_running_trials_checkpoint(exp)
    for checkpoint in exp.glob("trial_*/checkpoint_*"):
        shutil.rmtree(checkpoint)
    tuner.run(None, resume=True, name="g", storage=tmp_path, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv")
    assert len(table) == 3 and set(table.status) == {"finished"} and set(table.epochs) == {3}, table


def test_a_prior_guided_search_with_a_portfolio_first_resumes_after_sigkill_and_reports(ray_cluster, builtin_root,
                                                                                         tmp_path):
    """searcher: prior over smoke.yaml with a prior on lr and a portfolio of two configurations: killed after its
    first tell, resumed to every trial done; the portfolio went first, every trial names its source, the report
    says what ran, and run_best.py retrains the winner."""
    from tune_cvae.experiment.best import run_best
    raw = yaml.safe_load((ROOT / "search_spaces/smoke.yaml").read_text())
    raw["searcher"], raw["num_samples"], raw["portfolio"] = "prior", 5, "folio.yaml"
    raw["params"]["lr"]["prior"] = {"value": 5e-3, "confidence": "high"}
    folio = [{"kl_anneal_type": "None", "tfr_d_step": 0.5, "lr": 4e-3},
             {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 2, "tfr_d_step": 0.2, "lr": 2e-3}]
    (tmp_path / "folio.yaml").write_text(yaml.safe_dump({"portfolio": folio}))
    (tmp_path / "prior.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.Popen([sys.executable, "run_search.py", "--space", str(tmp_path / "prior.yaml"), "--data",
                             str(builtin_root), "--storage", str(tmp_path), "--name", "p"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (list((tmp_path / "p").glob("searcher-state-*.pkl")) and _first_tell_heard(tmp_path / "p", "p")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    exp = tuner.run(None, resume=True, name="p", storage=tmp_path, dashboard=False, verbose=0)
    table = read_trials(exp / "trials.csv", keep_default_na=False)
    assert len(table) == 5 and set(table.status) <= {"finished", "stopped early"}
    assert list(table.source).count("portfolio") == 2 and set(table.source) - {"portfolio"} <= {
        "prior", "incumbent", "uniform"}
    study = optuna.load_study(study_name="p", storage=study_storage(exp))
    firsts = [t.params for t in sorted(study.trials, key=lambda t: t.number)[:2]]
    assert firsts == folio  # the portfolio went first
    index = (exp / "report" / "index.md").read_text()
    assert "the prior-guided sampler" in index and "a portfolio of 2 first" in index and "| source |" in index
    out, summary = run_best(experiment=exp, epochs=1, out=tmp_path / "best")
    assert (out / "submission.csv").is_file() and "score" in summary
