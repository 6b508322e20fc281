"""Rollouts: videos generated frame by frame from a first frame and every pose, z from the prior or its mean; and
the PSNR of each generated frame.
"""
import copy

import torch

from tune_cvae.lab.model import channels_last, flat_frames


@torch.no_grad()
def rollout(model, first_frame: torch.Tensor, labels: torch.Tensor, infer_z: str = "prior", generator=None,
            pose_batch: int = 64, frame_fn=None) -> torch.Tensor:
    """Videos generated frame by frame: (K, T, 3, H, W) in [0, 1], the given first frames then T-1 generated
    frames each (or (T, 3, H, W) for one video).

    The K videos go through the network together (one call per frame for all of them, faster per video than one
    at a time; docs/PERFORMANCE.md); each is computed as it would be alone. On a CPU the frames go through
    cpu_inference_copy(model).

    Args:
        first_frame, labels: first frames (K, 3, H, W) and all poses (K, T, 3, H, W), in [0, 1]; one video may
            come as (3, H, W) and (T, 3, H, W).
        infer_z: 'prior': z drawn from N(0, I), each video's z for all its frames in one call, video after
            video, on the labels' device with `generator`, which must live there (the same seed gives the same z
            on that device); 'zero': the prior's mean.
        pose_batch: frames of all videos per call of the pose encoder.
        frame_fn: replaces next_frame (a compiled copy of it).
    """
    one = first_frame.dim() == 3
    firsts, labels = (first_frame[None], labels[None]) if one else (first_frame, labels)
    model.eval()
    K, T, _, H, W = labels.shape
    if labels.device.type == "cpu":
        model = cpu_inference_copy(model, pointwise=K == 1)
    copy_out = frame_fn is not None  # a CUDA graph's replay overwrites its output at the next replay
    frame_fn = frame_fn or next_frame
    shape = (T - 1, model.N_dim, H, W)
    if infer_z == "zero":
        zs = torch.zeros(shape[1:], device=labels.device).expand(T - 1, K, *shape[1:])
    else:
        zs = torch.stack([torch.randn(shape, generator=generator, device=labels.device) for _ in range(K)], 1)
    frames, prev = [firsts], firsts
    per_call = max(1, pose_batch // K)
    for start in range(1, T, per_call):
        poses = labels[:, start:start + per_call].transpose(0, 1)  # (frames, K, 3, H, W)
        label_feat = model.label_transformation(flat_frames(poses)).unflatten(0, poses.shape[:2])
        for i in range(label_feat.shape[0]):
            prev = frame_fn(model, prev, label_feat[i], zs[start - 1 + i])
            prev = prev.clone() if copy_out else prev
            frames.append(prev)
    videos = torch.stack(frames, 1)
    return videos[0] if one else videos


def cpu_inference_copy(model, pointwise=True):
    """The copy of `model` a CPU rollout runs: channels_last, with products for `pointwise` (measured faster for
    one video, slower for several together; docs/PERFORMANCE.md). The model itself stays as it is."""
    return channels_last(copy.deepcopy(model), pointwise)


def next_frame(model, prev: torch.Tensor, label_feat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One rollout step: the next frames (K, 3, H, W) from the previous ones, the poses' features (K, L_dim, H, W)
    and z (K, N_dim, H, W)."""
    return model.generate(model.frame_transformation(prev), label_feat, z, prev)


def psnr_per_frame(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (data range 1) of each frame separately: (T, 3, H, W) twice -> (T,), capped at 100 dB. Per frame:
    the template's helper averages over a batch first, which is wrong for batches of more than one."""
    mse = (pred.float() - true.float()).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).clamp(max=100.0)
