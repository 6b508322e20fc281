"""A run's training step, chosen once from its config and device (choose_step): what one batch of clips does to
the model. Each step takes clips (B, T, 3, H, W) in [0, 1] and returns the (loss, mse, kl) of each optimiser step
it took, on the device (no host sync: train.train_steps checks the loss every few batches). Also
keep_freed_memory, the malloc setting a CPU run's steps measured faster with (a Run sets it on a CPU).
"""
import ctypes
from concurrent.futures import ThreadPoolExecutor

import torch

from tune_cvae.lab.losses import batch_loss, frame_loss, pose_features, posterior_noise


def choose_step(run):
    """optim_step 'frame': FrameSteps. Else one step per batch: on a CPU with several torch threads the batch's
    clips each on a thread of their own (ThreadedBatchStep); otherwise all at once (BatchStep)."""
    cpu = run.device.type == "cpu"
    if run.config["optim_step"] == "frame":
        return FrameSteps(run)
    if cpu and clip_threads(run.config) > 1:
        return ThreadedBatchStep(run, clip_threads(run.config))
    return BatchStep(run)


def descend(run, loss):
    """One optimiser step on `loss`: fresh gradients, then apply_gradients."""
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    apply_gradients(run)


def apply_gradients(run):
    """The optimiser step on the gradients there, clipped to the configured norm."""
    if run.config["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config["grad_clip"])
    run.opt.step()


class BatchStep:
    """One optimiser step per batch, every frame of its clips through the network together (model.batch_loss);
    compiled with config['compile']. On a CPU the batched modules take piece_frames(config) frames at a time."""

    def __init__(self, run):
        self.run = run
        self.loss_fn = compiled(batch_loss, run.config, run.device)
        self.piece = piece_frames(run.config) if run.device.type == "cpu" else None

    def __call__(self, img, label, beta, teacher_forcing):
        run = self.run
        eps = posterior_noise(run.model, img)
        if run.config["compile"]:
            torch.compiler.cudagraph_mark_step_begin()  # a new training iteration for CUDA-graph replays
        with run.autocast():
            losses = self.loss_fn(run.model, img, label, beta, teacher_forcing, run.config["kl_reduction"], eps,
                                  self.piece)
        descend(run, losses[0])
        return [losses]


class ThreadedBatchStep(BatchStep):
    """BatchStep's loss and gradients with the batch's clips split over `threads` threads, each share's forward
    and backward on its own thread with its share of the torch threads: on a CPU one op over a few frames keeps
    only part of the cores busy. The pose encoder runs once over the whole batch (BatchNorm statistics) and takes
    its gradient after the shares."""

    def __init__(self, run, threads):
        super().__init__(run)
        self.threads = threads  # torch.set_num_threads on a pool thread also sets MKL's process-wide count, while
        self.pool = ThreadPoolExecutor(threads, initializer=torch.set_num_threads,  # this thread keeps its own
                                       initargs=(max(1, torch.get_num_threads() // threads),))  # OpenMP count

    def __call__(self, img, label, beta, teacher_forcing):
        eps = posterior_noise(self.run.model, img)
        self.run.opt.zero_grad(set_to_none=True)
        losses = self.backward(img, label, beta, teacher_forcing, eps)
        apply_gradients(self.run)
        return [losses]

    def backward(self, img, label, beta, teacher_forcing, eps):
        """The batch's gradients, accumulated share by share; returns its (loss, mse, kl), detached."""
        run, (B, T) = self.run, img.shape[:2]
        with run.autocast():
            label_feat = pose_features(run.model, label)
        leaf, eps = label_feat.detach().requires_grad_(), eps.unflatten(0, (B, T - 1))

        def share(rows):
            with run.autocast():
                losses = batch_loss(run.model, img[rows], None, beta, teacher_forcing, run.config["kl_reduction"],
                                    eps[rows].flatten(0, 1), self.piece, leaf[rows], len(rows) / B)
            losses[0].backward()
            return torch.stack(losses).detach()

        shares = torch.arange(B, device=img.device).tensor_split(self.threads)
        total = sum(f.result() for f in [self.pool.submit(share, rows) for rows in shares])
        label_feat.backward(leaf.grad)
        return tuple(total)


class FrameSteps:
    """An optimiser step after every predicted frame (optim_step 'frame'), the next frame fed the true one under
    teacher forcing, else the model's own detached prediction."""

    def __init__(self, run):
        self.run = run

    def __call__(self, img, label, beta, teacher_forcing):
        run, out, prev = self.run, [], img[:, 0]
        for t in range(1, img.shape[1]):
            with run.autocast():
                loss, mse, kl, pred = frame_loss(run.model, prev, img[:, t], label[:, t], beta,
                                                 run.config["kl_reduction"])
            descend(run, loss)
            out.append((loss, mse, kl))
            prev = img[:, t] if teacher_forcing else pred.detach()
        return out


def compiled(fn, config, device):
    """fn itself, or with config['compile'] its torch.compile'd copy (on CUDA in 'reduce-overhead' mode: the
    step replayed as CUDA graphs, since launching many small kernels, not arithmetic, bounds a batch of 2)."""
    if not config["compile"]:
        return fn
    return torch.compile(fn, mode="reduce-overhead" if device.type == "cuda" else "default")


def piece_frames(config):
    """Frames per piece of a batched CPU step: activations of about 6144 frame-channels at the widest layer, so
    a piece stays in the CPU's cache (docs/PERFORMANCE.md). GPUs take the whole batch."""
    widest = 4 * max(config["F_dim"] + config["L_dim"] + config["N_dim"], config["D_out_dim"])
    return max(1, 6144 // widest)


def clip_threads(config):
    """Threads a CPU step splits its batch's clips over: one per clip, at most one per torch thread; 1 (no split)
    for a compiled step."""
    return 1 if config["compile"] else max(1, min(config["batch_size"], torch.get_num_threads()))


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory in the process (no mmap per block, no trimming). By default it gives
    each large activation back to the OS when freed, so every CPU training step faults its pages in again
    (docs/PERFORMANCE.md). The process keeps its peak memory instead. Off glibc (no mallopt) nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4  # glibc's <malloc.h>
    for option, value in ((m_mmap_max, 0), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)):
        mallopt(option, value)
