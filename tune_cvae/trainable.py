"""The Ray Tune function trainable around train.py: restore, train, report every epoch with a checkpoint."""
import os
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune
from torch.utils.tensorboard import SummaryWriter

from tune_cvae.data import Lab4Data
from tune_cvae.train import load_checkpoint, save_checkpoint, train

TB_SCALARS = ("loss", "mse", "kl", "beta", "tfr", "lr", "val_psnr", "val_psnr_600", "train_frames_per_s")
STATE_FILE = "state.pt"


def _resources():
    """(CPUs, GPUs) this trial holds, from its placement group."""
    bundles = tune.get_context().get_trial_resources().bundles
    return sum(b.get("CPU", 0) for b in bundles), sum(b.get("GPU", 0) for b in bundles)


def set_threads(cpus):
    """Torch intra-op threads = the CPUs the trial holds, so packed trials do not oversubscribe the cores."""
    torch.set_num_threads(max(1, int(cpus)))


def write_epoch(writer, metrics, val_strip):
    """An epoch's scalars and validation strip, on disk when this returns: ASHA may end the trial's process
    right after its report, and torch's writer (unlike tensorboardX's) flushes its queue, not only the file."""
    for key in TB_SCALARS:
        writer.add_scalar(f"cvae/{key}", metrics[key], metrics["epoch"])
    writer.add_image("val/pred_top_true_bottom", val_strip, metrics["epoch"])
    writer.flush()


def train_trial(config, arrays):
    """One trial: `arrays` is the dataset decoded once on the driver and shared through the object store."""
    cpus, gpus = _resources()
    set_threads(cpus or 1)
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
    dataset = Lab4Data.from_arrays(arrays)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = load_checkpoint(Path(d) / STATE_FILE)
    node = ray.get_runtime_context().get_node_id()
    writer = SummaryWriter(os.path.join(tune.get_context().get_trial_dir(), "tensorboard"))

    def report(metrics, run):
        write_epoch(writer, metrics, run.val_strip)
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(run.state(), Path(d) / STATE_FILE)
            tune.report({**metrics, "node_id": node, "device": device},
                        checkpoint=tune.Checkpoint.from_directory(d))

    final, _ = train(config, dataset, device, state, report)
    if final.get("diverged"):  # a NaN result: ASHA and Optuna see it as a failed configuration
        tune.report({**final, "epoch": final["epoch"] + 1, "node_id": node, "device": device})
    writer.close()
