"""The Lab4 CVAE: the template's five modules (names and default sizes as the course's template, so that users'
checkpoints and intuitions carry over), the output activation the template lacks, and the CPU layout.

Every module keeps the 32x64 resolution; frames are (B, 3, 32, 64) floats in [0, 1].
"""
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
        """The next frames (B, 3, H, W) from the previous frames' features (B, F_dim, H, W), the poses' features
        (B, L_dim, H, W), z (B, N_dim, H, W) and the previous frames (B, 3, H, W) in [0, 1]."""
        out = self.Generator(self.Decoder_Fusion(frame_feat, label_feat, z))
        if self.output == "residual":
            if self.output_activation == "sigmoid":  # a residual in logit space: out = 0 repeats `prev`
                return torch.sigmoid(torch.logit(prev, eps=1e-3) + out)
            out = prev + out
        elif self.output_activation == "sigmoid":
            return torch.sigmoid(out)
        return out.clamp(0, 1) if self.output_activation == "clamp" else out




def model_from_config(config: dict) -> CVAE:
    """The CVAE a run's config describes (F_dim, L_dim, N_dim, D_out_dim, output_activation, output,
    logvar_clamp)."""
    return CVAE(config["F_dim"], config["L_dim"], config["N_dim"], config["D_out_dim"], config["output_activation"],
                config["output"], config["logvar_clamp"])



def flat_frames(x: torch.Tensor) -> torch.Tensor:
    """Clips (B, T, C, H, W) as frames (B*T, C, H, W); channels-last frames stay channels-last (a reshape that has
    to copy them would make them NCHW)."""
    if x.shape[2] > 1 and x.stride(2) == 1:
        return x.permute(0, 1, 3, 4, 2).flatten(0, 1).permute(0, 3, 1, 2)
    return x.reshape(-1, *x.shape[2:])
