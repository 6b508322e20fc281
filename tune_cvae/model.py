"""The Lab4 CVAE: the template's five modules, one training step over a clip, one frame-by-frame rollout.

Module names and default sizes follow the course template so that users' checkpoints and intuitions carry over.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution; with `product` (set by channels_last) one matrix product over the pixels instead (same
    values): on a CPU, for a channels-last model in training and for one video's frames, faster than torch's own
    1x1 path (docs/PERFORMANCE.md)."""
    product = False

    def __init__(self, in_ch, out_ch):
        super().__init__(in_ch, out_ch, 1)

    def forward(self, x):
        return _product(x, self.weight, self.bias) if self.product else super().forward(x)

    def halves(self, x):
        """The output's two halves along the channels. As products in training, each half is its own product:
        contiguous halves, and their gradients are not concatenated in the backward pass; without gradients one
        product measured faster (docs/PERFORMANCE.md)."""
        if self.product and torch.is_grad_enabled():
            h = self.out_channels // 2
            return _product(x, self.weight[:h], self.bias[:h]), _product(x, self.weight[h:], self.bias[h:])
        return self(x).chunk(2, dim=1)


def _product(x, weight, bias):
    """A 1x1 convolution as a matrix product over the pixels: no copy for a channels-last x."""
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)


def channels_last(model, products=True):
    """`model`, changed in place, in the layout that runs faster on a CPU: channels-last (oneDNN's NHWC kernels),
    its 1x1 convolutions as matrix products with `products` (the layers' outputs then stay channels-last)."""
    model.to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, Conv1x1):
            m.product = products
    return model


class ResidualBlock(nn.Module):
    """Two 3x3 convs with LeakyReLU(0.01); a 1x1 conv on the skip path when the channel count changes."""

    def __init__(self, in_ch, out_ch, slope=0.01):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.act = nn.LeakyReLU(slope)
        self.adaptor = Conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x):
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.act(self.conv2(self.act(self.conv1(x)))) + identity


class DepthConvBlock(nn.Module):
    """1x1 conv, LeakyReLU, depthwise 3x3, 1x1 conv with a residual; then a gated 1x1 feed-forward with a residual."""

    def __init__(self, in_ch, out_ch, slope_depth=0.01, slope_ffn=0.1):
        super().__init__()
        self.conv1 = nn.Sequential(Conv1x1(in_ch, in_ch), nn.LeakyReLU(slope_depth))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.conv2 = Conv1x1(in_ch, out_ch)
        self.adaptor = Conv1x1(in_ch, out_ch) if in_ch != out_ch else None
        hidden = out_ch * 2
        self.ffn_in = Conv1x1(out_ch, hidden * 2)
        self.ffn_out = Conv1x1(hidden, out_ch)
        self.ffn_act = nn.LeakyReLU(slope_ffn)

    def forward(self, x):
        identity = x if self.adaptor is None else self.adaptor(x)
        x = self.conv2(self.depth_conv(self.conv1(x))) + identity
        value, gate = self.ffn_in.halves(x)
        return x + self.ffn_out(value * self.ffn_act(gate))


class RGB_Encoder(nn.Sequential):
    def __init__(self, in_chans, out_chans):
        super().__init__(
            ResidualBlock(in_chans, out_chans // 8),
            DepthConvBlock(out_chans // 8, out_chans // 8),
            ResidualBlock(out_chans // 8, out_chans // 4),
            DepthConvBlock(out_chans // 4, out_chans // 4),
            ResidualBlock(out_chans // 4, out_chans // 2),
            DepthConvBlock(out_chans // 2, out_chans // 2),
            nn.Conv2d(out_chans // 2, out_chans, 3, padding=1),
        )


class Label_Encoder(nn.Sequential):
    def __init__(self, in_chans, out_chans):
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_chans, out_chans // 2, kernel_size=7),
            nn.BatchNorm2d(out_chans // 2),
            nn.LeakyReLU(True),  # the template's quirk: slope True == 1, an identity; kept so results reproduce
            ResidualBlock(out_chans // 2, out_chans),
        )


class Gaussian_Predictor(nn.Sequential):
    """Posterior q(z | current frame features, pose features) -> (z, mu, logvar), each N_dim x H x W.
    `logvar_clamp` > 0 bounds the log-variance to [-v, v] (an exp() of a runaway logvar is a common NaN source)."""

    def __init__(self, in_chans, out_chans, logvar_clamp=0.0):
        super().__init__(
            ResidualBlock(in_chans, max(out_chans // 4, 1)),
            DepthConvBlock(max(out_chans // 4, 1), max(out_chans // 4, 1)),
            ResidualBlock(max(out_chans // 4, 1), max(out_chans // 2, 1)),
            DepthConvBlock(max(out_chans // 2, 1), max(out_chans // 2, 1)),
            ResidualBlock(max(out_chans // 2, 1), out_chans),
            nn.LeakyReLU(True),  # template quirk (identity), see Label_Encoder
            Conv1x1(out_chans, out_chans * 2),
        )
        self.logvar_clamp = logvar_clamp

    @staticmethod
    def reparameterize(mu, logvar, eps=None):
        """z = mu + sigma * eps; eps is drawn here unless given (a compiled step takes its noise as an input)."""
        return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)

    def forward(self, img, label, eps=None):
        mu, logvar = super().forward(torch.cat([img, label], dim=1)).chunk(2, dim=1)
        if self.logvar_clamp > 0:
            logvar = logvar.clamp(-self.logvar_clamp, self.logvar_clamp)
        return self.reparameterize(mu, logvar, eps), mu, logvar


class Decoder_Fusion(nn.Sequential):
    def __init__(self, in_chans, out_chans):
        super().__init__(
            DepthConvBlock(in_chans, in_chans),
            ResidualBlock(in_chans, in_chans // 4),
            DepthConvBlock(in_chans // 4, in_chans // 2),
            ResidualBlock(in_chans // 2, in_chans // 2),
            DepthConvBlock(in_chans // 2, out_chans // 2),
            Conv1x1(out_chans // 2, out_chans),
        )

    def forward(self, img, label, z):
        return super().forward(torch.cat([img, label, z], dim=1))


class Generator(nn.Sequential):
    def __init__(self, input_nc, output_nc):
        super().__init__(
            DepthConvBlock(input_nc, input_nc),
            ResidualBlock(input_nc, input_nc // 2),
            DepthConvBlock(input_nc // 2, input_nc // 2),
            ResidualBlock(input_nc // 2, input_nc // 4),
            DepthConvBlock(input_nc // 4, input_nc // 4),
            ResidualBlock(input_nc // 4, input_nc // 8),
            DepthConvBlock(input_nc // 8, input_nc // 8),
            Conv1x1(input_nc // 8, output_nc),
        )


class CVAE(nn.Module):
    """The five template modules plus what the template lacks: an output activation (sigmoid, clamp or none)
    and, optionally, a residual output (the Generator predicts the change from the previous frame, so a static
    background costs nothing to keep)."""

    def __init__(self, F_dim=128, L_dim=32, N_dim=12, D_out_dim=192, output_activation="sigmoid", output="frame",
                 logvar_clamp=0.0):
        super().__init__()
        self.N_dim = N_dim
        self.output_activation, self.output = output_activation, output
        self.frame_transformation = RGB_Encoder(3, F_dim)
        self.label_transformation = Label_Encoder(3, L_dim)
        self.Gaussian_Predictor = Gaussian_Predictor(F_dim + L_dim, N_dim, logvar_clamp)
        self.Decoder_Fusion = Decoder_Fusion(F_dim + L_dim + N_dim, D_out_dim)
        self.Generator = Generator(D_out_dim, 3)
        if output == "residual":  # start as "repeat the previous frame": a random residual drifts over a rollout
            nn.init.zeros_(self.Generator[-1].weight)
            nn.init.zeros_(self.Generator[-1].bias)

    def generate(self, frame_feat, label_feat, z, prev):
        """The next frame from the previous frame's features, the pose features, z and the previous frame."""
        out = self.Generator(self.Decoder_Fusion(frame_feat, label_feat, z))
        if self.output == "residual":
            if self.output_activation == "sigmoid":  # a residual in logit space: out = 0 repeats `prev`
                return torch.sigmoid(torch.logit(prev, eps=1e-3) + out)
            out = prev + out
        elif self.output_activation == "sigmoid":
            return torch.sigmoid(out)
        return out.clamp(0, 1) if self.output_activation == "clamp" else out


def model_from_config(config):
    return CVAE(config["F_dim"], config["L_dim"], config["N_dim"], config["D_out_dim"], config["output_activation"],
                config["output"], config["logvar_clamp"])


def kl_divergence(mu, logvar, reduction):
    """KL(q || N(0, I)). 'sum_batch' is the template's form (sum over every latent value / batch size);
    'mean' averages over elements, which keeps beta on the same scale as the per-pixel MSE."""
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "sum_batch":
        return kl.sum() / mu.shape[0]
    return kl.mean()


def _flat(x):
    """(B, T, C, H, W) -> (B*T, C, H, W); channels-last frames stay channels-last (a reshape that has to copy
    them would make them NCHW)."""
    if x.shape[2] > 1 and x.stride(2) == 1:
        return x.permute(0, 1, 3, 4, 2).flatten(0, 1).permute(0, 3, 1, 2)
    return x.reshape(-1, *x.shape[2:])


def posterior_noise(model, img):
    """The reparameterisation noise of one training step over clips (B, T, 3, H, W), drawn in one call: the
    same numbers the posterior's randn_like would draw, made an input so a compiled step can take it."""
    B, T, _, H, W = img.shape
    return torch.randn((B * (T - 1), model.N_dim, H, W), device=img.device)


def pose_features(model, label):
    """The pose encoder over every predicted frame's pose of clips (B, T, 3, H, W) at once (its BatchNorm
    normalises over the whole batch): (B, T-1, L, H, W)."""
    B, T = label.shape[:2]
    return model.label_transformation(_flat(label[:, 1:])).unflatten(0, (B, T - 1))


def batch_loss(model, img, label, beta, teacher_forcing, kl_reduction, eps=None, piece=None, label_feat=None,
               share=1.0):
    """Loss over one batch of clips (B, T, 3, H, W) in [0, 1]: mean over frames 1..T-1 of MSE + beta * KL.

    With teacher forcing every frame's input is known in advance, so all frames go through the network as
    one batch; without it the decoder path runs frame by frame on the model's own (detached) predictions.
    The posterior and pose features never depend on predictions, so they are always batched. `eps` is the
    posterior's noise (posterior_noise), drawn here when not given. `piece`: frames per call of the batched
    modules (same values; see steps.piece_frames); None = all at once. A share of a batch (steps.ThreadedBatchStep)
    comes with its pose features `label_feat` (B, T-1, L, H, W), computed over the whole batch for BatchNorm,
    and its `share` of the batch's clips, so that the shares' losses add up to the batch's.
    """
    B, T = img.shape[:2]
    eps = posterior_noise(model, img) if eps is None else eps
    frame_feat = _in_pieces(model.frame_transformation, piece, _flat(img)).unflatten(0, (B, T))
    label_feat = pose_features(model, label) if label_feat is None else label_feat
    z, mu, logvar = _in_pieces(model.Gaussian_Predictor, piece, _flat(frame_feat[:, 1:]), _flat(label_feat), eps)
    z = z.unflatten(0, (B, T - 1))
    if teacher_forcing:
        pred = _in_pieces(model.generate, piece, _flat(frame_feat[:, :-1]), _flat(label_feat), _flat(z),
                       _flat(img[:, :-1])).unflatten(0, (B, T - 1))
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


def frame_loss(model, prev, img, label, beta, kl_reduction):
    """Loss of predicting one frame img (B, 3, H, W) from the previous one `prev` and its pose: the unit of
    optim_step='frame' (an optimiser step after every predicted frame). Returns (loss, mse, kl, prediction)."""
    label_feat = model.label_transformation(label)
    z, mu, logvar = model.Gaussian_Predictor(model.frame_transformation(img), label_feat)
    pred = model.generate(model.frame_transformation(prev), label_feat, z, prev)
    mse, kl = F.mse_loss(pred, img), kl_divergence(mu, logvar, kl_reduction)
    return mse + beta * kl, mse, kl, pred


@torch.no_grad()
def rollout(model, first_frame, labels, infer_z="prior", generator=None, pose_batch=64, frame_fn=None):
    """Generate videos frame by frame from their first frames (K, 3, H, W) and all their poses (K, T, 3, H, W),
    in [0, 1]; one video may come as (3, H, W) and (T, 3, H, W).

    Returns (K, T, 3, H, W) (or (T, 3, H, W)): the given first frames then T-1 generated frames each. The K
    videos go through the network together (one call per frame for all of them, faster per video than one at a
    time; docs/PERFORMANCE.md); each is computed as it would be alone. z
    comes from the prior N(0, I) ('prior': each video's z for all its frames drawn in one call, video after
    video, on the labels' device with `generator`, which must live there: the same seed gives the same z on that
    device) or is the prior's mean ('zero'). `pose_batch`: frames of all videos per call of the pose encoder.
    `frame_fn` replaces next_frame (a compiled copy of it). On a CPU the frames go through
    cpu_inference_copy(model).
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
        label_feat = model.label_transformation(_flat(poses)).unflatten(0, poses.shape[:2])
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


def next_frame(model, prev, label_feat, z):
    """One rollout step: the next frame (1, 3, H, W) from the previous one, the pose's features and z."""
    return model.generate(model.frame_transformation(prev), label_feat, z, prev)


def psnr_per_frame(pred, true):
    """PSNR (dB, data range 1) of each frame separately: (T, C, H, W) x2 -> (T,). Capped at 100 dB."""
    mse = (pred.float() - true.float()).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).clamp(max=100.0)
