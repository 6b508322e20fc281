"""The Ray Tune function trainable around lab.train: restore, train, report every epoch with a checkpoint, and
write the trial's own records (epochs.jsonl, TensorBoard, the last validation's PSNR per frame)."""
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow.fs
import ray
import torch
from ray import tune
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from tune_cvae.common import say
from tune_cvae.experiment.files import EPOCH_SCALARS, EPOCHS_FILE, PER_FRAME_FILE, STATE_FILE
from tune_cvae.experiment.lineage import lineage
from tune_cvae.experiment.space import label
from tune_cvae.experiment.wandb_log import STRIP_FILE
from tune_cvae.lab.checkpoint import load_checkpoint, save_checkpoint
from tune_cvae.lab.config import SETTABLE
from tune_cvae.lab.data import Lab4Data
from tune_cvae.lab.train import STRIP_FRAMES, train

def _resources():
    """(CPUs, GPUs) this trial holds, from its placement group."""
    bundles = tune.get_context().get_trial_resources().bundles
    return sum(b.get("CPU", 0) for b in bundles), sum(b.get("GPU", 0) for b in bundles)


def set_threads(cpus):
    """Torch intra-op threads = the CPUs the trial holds, so packed trials do not oversubscribe the cores."""
    torch.set_num_threads(max(1, int(cpus)))


STRIP_TAG = "val/frames " + ",".join(map(str, STRIP_FRAMES)) + ": predicted (top) vs true (bottom)"


def write_epoch(writer, metrics, val_strip):
    """An epoch's scalars and validation strip, on disk when this returns: ASHA may end the trial's process
    right after its report, and torch's writer (unlike tensorboardX's) flushes its queue, not only the file."""
    for key in EPOCH_SCALARS:
        writer.add_scalar(f"cvae/{key}", metrics[key], metrics["epoch"])
    writer.add_image(STRIP_TAG, val_strip, metrics["epoch"])
    writer.flush()


def tensorboard_run(trial_dir, trial_id, config, searched):
    """The trial's TensorBoard writer: one run per trial, named by its id and as many searched values as a folder
    name holds, with the HParams tab's entry (every searched value, the objective read from the run's own
    val_psnr scalars)."""
    values = {k: config[k] for k in searched if k in config}
    writer = SummaryWriter(os.path.join(trial_dir, label(trial_id, values)))
    values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}
    for summary in hparams(values, {"cvae/val_psnr": 0.0, "cvae/loss": 0.0}):
        writer.file_writer.add_summary(summary)  # the config only: no fake metric points in the curves
    return writer


def records_folder():
    """The folder a trial writes its own records into (epochs.jsonl, TensorBoard events, the last validation's
    PSNR per frame): its working directory on the node it runs on, which Ray uploads to the experiment in storage
    with each checkpoint (SyncConfig(sync_artifacts=True)). get_trial_dir() names the driver's staging folder,
    which exists only on the driver's node."""
    folder = Path(tune.get_context().get_storage().trial_working_directory)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def recover_epochs(trial_dir):
    """Put the storage's epochs.jsonl back into a fresh working copy of the trial folder: a resumed search runs in
    a new Ray session, whose copy starts empty and would replace the stored record at its next upload."""
    local = trial_dir / EPOCHS_FILE
    if local.exists():
        return
    storage = tune.get_context().get_storage()
    try:
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/{EPOCHS_FILE}") as f:
            local.write_bytes(f.read())
    except FileNotFoundError:  # the trial's first start
        pass


def restored_state():
    """The state of the checkpoint the trial continues (its own, or under PBT a donor's), or None."""
    checkpoint = tune.get_checkpoint()
    if not checkpoint:
        return None
    with checkpoint.as_directory() as d:
        return load_checkpoint(Path(d) / STATE_FILE)


def record_epoch(trial_dir, result, config):
    """Append an epoch's result to the trial's epochs.jsonl (the report's record: Ray may rewrite result.json)."""
    with open(trial_dir / EPOCHS_FILE, "a") as f:
        f.write(json.dumps({**result, "config": config, "wall_time": time.time()}) + "\n")


def hand_over(trial_dir, state, extra):
    """A PBT trial given a finished trial's weights (at the last perturbation, or when a resumed search had trials
    at different epochs): where the trial never reported that last epoch itself, those weights' last epoch is
    its result, so that it ends finished; otherwise its own result stands."""
    rows = (trial_dir / EPOCHS_FILE).read_text().splitlines() if (trial_dir / EPOCHS_FILE).exists() else []
    if any(json.loads(line).get("epoch") == state["epoch"] for line in rows if line.strip()):
        return
    last = {**state["history"][-1], "lineage": lineage(state["history"]), **extra}
    record_epoch(trial_dir, last, state["config"])
    tune.report(last)


def train_trial(config, arrays, searched=(), strip=False):
    """One trial: `arrays` is the dataset decoded once on the driver and shared through the object store;
    `strip`: also keep each validation's image strip as a picture (for W&B, which the driver writes)."""
    cpus, gpus = _resources()
    set_threads(cpus or 1)
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
    dataset, state, node = Lab4Data.from_arrays(arrays), restored_state(), ray.get_runtime_context().get_node_id()
    trial_dir, trial_id = records_folder(), tune.get_context().get_trial_id()
    recover_epochs(trial_dir)
    if state and state["history"] and state["history"][-1].get("trained_by") not in (trial_id, None):
        say(f"PBT exploit: continuing trial {state['history'][-1]['trained_by']}'s weights of epoch {state['epoch']}"
            f" with " + " ".join(f"{k}={config[k]:.3g}" for k in SETTABLE))
        if state["epoch"] >= config["num_epoch"]:  # a finished trial's weights: nothing left to train
            hand_over(trial_dir, state, {"node_id": node, "device": device})
            return
    writer = tensorboard_run(trial_dir, trial_id, config, searched)

    def report(metrics, run):
        write_epoch(writer, metrics, run.val_strip)
        lines = "frame,psnr\n" + "".join(f"{i},{v:.4f}\n" for i, v in enumerate(run.val_psnr.tolist(), 1))
        (trial_dir / PER_FRAME_FILE).write_text(lines)  # the report's figure of the last validation
        if strip:
            save_strip(run.val_strip, trial_dir / STRIP_FILE)
        result = {**metrics, "lineage": lineage(run.history), "node_id": node, "device": device}
        record_epoch(trial_dir, result, run.config)
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(run.state(), Path(d) / STATE_FILE)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))

    final, _ = train(config, dataset, device, state, report, name=trial_id)
    if final.get("diverged"):  # a NaN result: ASHA and Optuna see it as a failed configuration
        tune.report({**final, "epoch": final["epoch"] + 1, "node_id": node, "device": device})
    writer.close()


def save_strip(strip, path):
    """An image strip (3, H, W) in [0, 1] as a PNG."""
    from PIL import Image
    Image.fromarray((strip.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path)


class RestartWhereCheckpointIsGone:
    """A trial whose recorded checkpoint is gone from storage trains again from its first epoch. Ray deletes a
    trial's older checkpoints as it saves newer ones (num_to_keep) but snapshots its own state only now and then:
    a driver killed in between leaves a state naming a deleted checkpoint, from which Ray would fail the trial
    twice and end it errored."""

    def restore(self, checkpoint_path):
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)  # Ray passes a _TrainingResult
        if isinstance(checkpoint, tune.Checkpoint) and \
                checkpoint.filesystem.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.NotFound:
            say(f"warning: trial {self.trial_id}: its checkpoint {checkpoint.path} is gone from storage (Ray's "
                f"state was saved before it deleted it); the trial trains again from its first epoch")
            return
        super().restore(checkpoint_path)


def named_trial(params, strip=False):
    """train_trial, its Ray actor named after its trial: the dashboard's Actors view and the log prefixes show
    "trial ID: key=value ..." of the searched `params` (as many as `space.label` lets in) instead of
    `train_trial`. (Ray mixes `__mixins__` into the actor class; its repr is the instance's `_name`, which Ray
    reads once the actor is constructed.)"""

    class NamedTrial:
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._name = label(f"trial {self.trial_id}:", {k: self.config[k] for k in params if k in self.config})

    @functools.wraps(train_trial)
    def trial(config, arrays):
        return train_trial(config, arrays, params, strip)

    trial.__mixins__ = (NamedTrial, RestartWhereCheckpointIsGone)
    return trial
