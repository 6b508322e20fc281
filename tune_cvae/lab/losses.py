"""The training objective: MSE + beta * KL over a batch of clips (all frames batched under teacher forcing, frame
by frame without it), or over one frame for optim_step 'frame'.

Clips are (B, T, 3, 32, 64) floats in [0, 1]; frame 0 of each clip is given, frames 1..T-1 are predicted.
"""
import torch
import torch.nn.functional as F

from tune_cvae.lab.model import flat_frames


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(q || N(0, I)) of a diagonal Gaussian posterior, a scalar.

    Args:
        mu, logvar: (B, N_dim, H, W), the posterior's mean and log-variance.
        reduction: 'sum_batch', the template's form (the sum over every latent value divided by B: about 24,576
            values per frame against a per-pixel MSE), or 'mean' over elements, which keeps beta on the scale of
            the MSE.
    """
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "sum_batch":
        return kl.sum() / mu.shape[0]
    return kl.mean()


def posterior_noise(model, img: torch.Tensor) -> torch.Tensor:
    """The reparameterisation noise of one training step over clips img (B, T, 3, H, W): (B*(T-1), N_dim, H, W),
    drawn in one call, the numbers the posterior's randn_like would draw, made an input so a compiled step can
    take it."""
    B, T, _, H, W = img.shape
    return torch.randn((B * (T - 1), model.N_dim, H, W), device=img.device)


def pose_features(model, label: torch.Tensor) -> torch.Tensor:
    """The pose encoder over the poses of every predicted frame of clips label (B, T, 3, H, W) at once (its
    BatchNorm normalises over the whole batch): (B, T-1, L_dim, H, W)."""
    B, T = label.shape[:2]
    return model.label_transformation(flat_frames(label[:, 1:])).unflatten(0, (B, T - 1))


def batch_loss(model, img: torch.Tensor, label: torch.Tensor | None, beta, teacher_forcing: bool,
               kl_reduction: str, eps=None, piece=None, label_feat=None, share=1.0):
    """(loss, mse, kl) of one batch of clips, each a scalar: the mean over frames 1..T-1 of MSE + beta * KL.

    With teacher forcing every frame's input is known in advance, so all frames go through the network as one
    batch; without it the decoder path runs frame by frame on the model's own (detached) predictions. The
    posterior and pose features never depend on predictions, so they are always batched.

    Args:
        img, label: clips (B, T, 3, H, W) in [0, 1] and their poses (label may be None with `label_feat`).
        beta: the KL term's weight (a float or a 0-d tensor, which a compiled step does not recompile for).
        eps: the posterior's noise (posterior_noise); drawn here when None.
        piece: frames per call of the batched modules (same values; steps.piece_frames); None: all at once.
        label_feat, share: a share of a batch (steps.ThreadedBatchStep) comes with its pose features
            (B, T-1, L_dim, H, W), computed over the whole batch for BatchNorm, and its fraction of the batch's
            clips, so that the shares' losses add up to the batch's.
    """
    B, T = img.shape[:2]
    eps = posterior_noise(model, img) if eps is None else eps
    frame_feat = _in_pieces(model.frame_transformation, piece, flat_frames(img)).unflatten(0, (B, T))
    label_feat = pose_features(model, label) if label_feat is None else label_feat
    z, mu, logvar = _in_pieces(model.Gaussian_Predictor, piece, flat_frames(frame_feat[:, 1:]),
                               flat_frames(label_feat), eps)
    z = z.unflatten(0, (B, T - 1))
    if teacher_forcing:
        pred = _in_pieces(model.generate, piece, flat_frames(frame_feat[:, :-1]), flat_frames(label_feat),
                          flat_frames(z), flat_frames(img[:, :-1])).unflatten(0, (B, T - 1))
    else:
        preds, prev, prev_feat = [], img[:, 0], frame_feat[:, 0]
        for t in range(T - 1):
            prev = model.generate(prev_feat, label_feat[:, t], z[:, t], prev)
            preds.append(prev)
            prev = prev.detach()
            if t < T - 2:
                prev_feat = model.frame_transformation(prev)
        pred = torch.stack(preds, dim=1)
    mse = F.mse_loss(pred, img[:, 1:]) * share
    # frames are flattened into the batch, so either reduction gives the mean over frames of the per-frame KL
    kl = kl_divergence(mu, logvar, kl_reduction) * share
    return mse + beta * kl, mse, kl


def _in_pieces(fn, piece, *xs):
    """fn applied to the inputs' first dimension in pieces of `piece` frames and concatenated (None: at once)."""
    if not piece or xs[0].shape[0] <= piece:
        return fn(*xs)
    outs = [fn(*inputs) for inputs in zip(*(x.split(piece) for x in xs))]
    return tuple(map(torch.cat, zip(*outs))) if isinstance(outs[0], tuple) else torch.cat(outs)


def frame_loss(model, prev: torch.Tensor, img: torch.Tensor, label: torch.Tensor, beta, kl_reduction: str):
    """(loss, mse, kl, prediction) of predicting frames img (B, 3, H, W) from the previous ones `prev` and their
    poses `label` (same shapes, [0, 1]): the unit of optim_step='frame' (an optimiser step after every predicted
    frame)."""
    label_feat = model.label_transformation(label)
    z, mu, logvar = model.Gaussian_Predictor(model.frame_transformation(img), label_feat)
    pred = model.generate(model.frame_transformation(prev), label_feat, z, prev)
    mse, kl = F.mse_loss(pred, img), kl_divergence(mu, logvar, kl_reduction)
    return mse + beta * kl, mse, kl, pred
