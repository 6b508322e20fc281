"""What users send each other cannot run code, destroy files or pass silently wrong: checkpoints load with
weights_only, a file that is not a checkpoint gets one line, a resumed run continues on the dataset it trained
on, run_best.py replaces only folders it wrote."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY, make_experiment, write_lab4
from tune_cvae.common import UserError
from tune_cvae.experiment.staging import OUT_MARK, staged_output
from tune_cvae.experiment.start import new_experiment
from tune_cvae.lab.data import load_dataset
from tune_cvae.lab.checkpoint import load_checkpoint, save_checkpoint
from tune_cvae.lab.train import Run, train

ROOT = Path(__file__).resolve().parent.parent


class WritesAFile:
    """A pickle that, loaded with weights_only=False, would create `path` (as any code could run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def evil(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"config": {}, "model": WritesAFile(tmp_path / "PWNED")}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused(evil):
    with pytest.raises(UserError, match=r"evil.ckpt: refused: loading it would call posix.system"):
        load_checkpoint(evil)
    assert not (evil.parent / "PWNED").exists()


def test_train_cli_refuses_it_with_one_line_and_exit_2(evil):
    proc = subprocess.run([sys.executable, "-m", "tune_cvae", "train", "--ckpt_path", str(evil)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "refused" in proc.stderr, proc.stderr
    assert not (evil.parent / "PWNED").exists()


def _other_torch_file(path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)


@pytest.mark.parametrize("write", [
    lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    lambda p: p.write_text("epoch: 3\n"),
    lambda p: Image.new("RGB", (8, 4)).save(p, format="PNG"),
    lambda p: p.write_bytes(b""),
    lambda p: torch.save(torch.zeros(3), p),
    _other_torch_file,
], ids=["random-bytes", "text", "png", "empty", "tensor", "other-torch-dict"])
def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path, write):
    path = tmp_path / "x.ckpt"
    write(path)
    with pytest.raises(UserError, match=r"x.ckpt: not a (tune_cvae )?checkpoint") as exc:
        load_checkpoint(path)
    assert "\n" not in str(exc.value)


def test_a_checkpoint_whose_weights_do_not_fit_its_config(tmp_path):
    data = load_dataset(write_lab4(tmp_path / "d", n_val=3), progress=False)
    state = Run({**TINY, "num_epoch": 1}, data).state()
    state["config"] = {**state["config"], "F_dim": 64}
    with pytest.raises(UserError, match="does not fit its own config"):
        train(state["config"], data, state=state)


def test_a_checkpoint_loads_with_everything_to_continue(tmp_path):
    data = load_dataset(write_lab4(tmp_path / "d", n_val=3), progress=False)
    save_checkpoint(Run({**TINY, "num_epoch": 1, "lr_scheduler": "multistep"}, data).state(), tmp_path / "a.ckpt")
    state = load_checkpoint(tmp_path / "a.ckpt")
    assert state["data_dir"] == data.root and state["config"]["F_dim"] == TINY["F_dim"]


def _resume(ckpt, *args):
    return subprocess.run([sys.executable, "-m", "tune_cvae", "train", "--ckpt_path", str(ckpt),
                           "--save_root", str(ckpt.parent / "resumed"), *args], capture_output=True, text=True)


def test_resume_continues_on_the_dataset_the_checkpoint_trained_on(tmp_path):
    data = load_dataset(write_lab4(tmp_path / "mine", n_val=3, n_train=16), progress=False)
    config = {**TINY, "num_epoch": 1, "train_vi_len": 4, "batch_size": 2}
    save_checkpoint(Run(config, data).state(), tmp_path / "a.ckpt")
    proc = _resume(tmp_path / "a.ckpt")
    assert proc.returncode == 0, proc.stderr
    assert f"data {tmp_path / 'mine'}" in proc.stderr and "built-in" not in proc.stderr


def test_resume_demands_data_when_the_recorded_dataset_is_gone(tmp_path):
    data = load_dataset(write_lab4(tmp_path / "mine", n_val=3, n_train=16), progress=False)
    save_checkpoint(Run({**TINY, "num_epoch": 1, "train_vi_len": 4}, data).state(), tmp_path / "a.ckpt")
    (tmp_path / "mine").rename(tmp_path / "moved")
    proc = _resume(tmp_path / "a.ckpt")
    assert proc.returncode == 2 and "the checkpoint's dataset is gone; pass --data" in proc.stderr, proc.stderr
    assert not (tmp_path / "resumed").exists()


def test_run_best_refuses_an_out_folder_it_did_not_write(tmp_path):
    exp = make_experiment(tmp_path / "exp")
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("months of work")
    proc = subprocess.run([sys.executable, "run_best.py", "--experiment", str(exp), "--out", str(mine)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "holds files run_best.py did not write" in proc.stderr, proc.stderr
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"] and len(list(tmp_path.iterdir())) == 2


def test_staged_output_replaces_only_its_own_output_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "best"
    with staged_output(out) as tmp:
        (tmp / "submission.csv").write_text("first")
    with staged_output(out) as tmp:  # an earlier output (marked) is replaced
        (tmp / "submission.csv").write_text("second")
    assert (out / "submission.csv").read_text() == "second"
    with pytest.raises(KeyboardInterrupt), staged_output(out) as tmp:
        (tmp / "submission.csv").write_text("half")
        raise KeyboardInterrupt
    assert (out / "submission.csv").read_text() == "second" and sorted(tmp_path.iterdir()) == [out]
    (out / OUT_MARK).unlink()
    with pytest.raises(UserError, match="did not write"), staged_output(out):
        pass


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute_experiment", "..", "a/b"])
def test_an_experiment_name_cannot_lead_out_of_storage(tmp_path, name):
    storage = tmp_path / "one" / "two" / "rr"
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--name", name, "--storage",
                           str(storage)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "must be one folder name" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [] and not Path("/tmp/absolute_experiment").exists()


def test_an_over_long_experiment_name_is_refused_and_a_long_space_name_shortened(tmp_path):
    name = "é" * 101  # 202 bytes
    proc = subprocess.run([sys.executable, "run_search.py", "--space", "smoke", "--name", name, "--storage",
                           str(tmp_path / "rr")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "202 bytes; at most 200" in proc.stderr, proc.stderr
    assert not (tmp_path / "rr").exists()
    space = tmp_path / ("s" * 245 + ".yaml")  # the longest file name a file system allows
    space.write_text((ROOT / "search_spaces/smoke.yaml").read_text())
    exp_dir, _ = new_experiment(str(space), "/nowhere", None, tmp_path / "rr", 0)
    assert exp_dir.name.startswith("s" * 40 + "-") and len(exp_dir.name) == 40 + 16
WRITE_AND_DIE = """
import os, sys, torch
from torch.utils.tensorboard import SummaryWriter
from tune_cvae.experiment.files import EPOCH_SCALARS
from tune_cvae.search.trainable import write_epoch
writer = SummaryWriter(sys.argv[1])
for epoch in range(1, 21):
    write_epoch(writer, {"epoch": epoch, **{k: 1.0 for k in EPOCH_SCALARS}}, torch.rand(3, 64, 512))
os._exit(0)  # what ending a trial's actor looks like to its writer: no close, no atexit
"""


def test_a_trial_ended_right_after_its_report_keeps_every_tensorboard_record(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    proc = subprocess.run([sys.executable, "-c", WRITE_AND_DIE, str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    from tune_cvae.search.trainable import STRIP_TAG
    assert [e.step for e in events.Images(STRIP_TAG)] == list(range(1, 21))
    assert len(events.Scalars("cvae/val_psnr")) == 20


def test_run_best_from_checkpoint_refuses_a_checkpoint_that_would_run_code(tmp_path, evil):
    exp = make_experiment(tmp_path / "exp")
    (exp / "trial_a1/checkpoint_000002").mkdir()
    os.replace(evil, exp / "trial_a1/checkpoint_000002/state.pt")  # a shared experiment folder, tampered with
    data = write_lab4(tmp_path / "data", n_val=3)
    proc = subprocess.run([sys.executable, "run_best.py", "--experiment", str(exp), "--from-checkpoint", "--data",
                           str(data), "--out", str(tmp_path / "best")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "state.pt: refused: loading it would call posix.system" in proc.stderr, \
        proc.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "best").exists()


@pytest.mark.parametrize("item, message", [("nonsense", "--set nonsense: expected KEY=VALUE"),
                                           ("colour=red", "--set: unknown config key 'colour'"),
                                           ("lr_scheduler=sometimes", "lr_scheduler='sometimes': must be one of")])
def test_run_best_set_refuses_what_the_config_would_refuse(tmp_path, item, message):
    exp = make_experiment(tmp_path / "exp")
    proc = subprocess.run([sys.executable, "run_best.py", "--experiment", str(exp), "--set", item],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (exp / "best").exists()
