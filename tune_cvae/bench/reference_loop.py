"""The course's reference loops: the template's training and validation loops re-created faithfully, the yardstick
of the speed benchmark (speed.py) and the reference the tests hold the project's batched step to.
"""
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from tune_cvae.lab.data import IMG_H, IMG_W, paired_frames
from tune_cvae.lab.losses import kl_divergence
from tune_cvae.lab.model import model_from_config

BATCH, CLIP = 2, 16  # the template's batch size and clip length


class TemplateClips(torch.utils.data.Dataset):
    """The template's Dataset_Dance: clip i is frames i*T .. i*T+T-1 of the sorted training list, each PNG opened,
    resized to 32x64 and made a tensor in __getitem__, so every epoch decodes every file again."""

    def __init__(self, root, vi_len=CLIP):
        from torchvision import transforms
        imgs, labels = paired_frames(Path(root) / "train/train_img", Path(root) / "train/train_label")
        self.imgs, self.labels = [e.path for e in imgs], [e.path for e in labels]  # picklable for any start method
        self.vi_len = vi_len
        self.transform = transforms.Compose([transforms.Resize((IMG_H, IMG_W)), transforms.ToTensor()])

    def __len__(self):
        return len(self.imgs) // self.vi_len

    def _load(self, path):
        return self.transform(Image.open(path).convert("RGB"))

    def __getitem__(self, i):
        part = slice(i * self.vi_len, (i + 1) * self.vi_len)
        return (torch.stack([self._load(e) for e in self.imgs[part]]),
                torch.stack([self._load(e) for e in self.labels[part]]))


def template_step(model, opt, img, label, beta, teacher_forcing, grad_clip=1.0, eps=None):
    """The template's training_one_step: frame by frame, the previous and the current frame each encoded, the
    per-frame losses added up (divided by the frame count here, so it is the project's loss), one backward,
    clipping, one Adam step, and the loss read back for the progress bar. `eps` (B, T-1, N, H, W): the noise."""
    img, label = img.transpose(0, 1), label.transpose(0, 1)  # (T, B, 3, H, W)
    loss, prev = 0.0, img[0]
    for i in range(1, len(img)):
        label_feat = model.label_transformation(label[i])
        z, mu, logvar = model.Gaussian_Predictor(model.frame_transformation(img[i]), label_feat,
                                                 None if eps is None else eps[:, i - 1])
        out = model.generate(model.frame_transformation(prev), label_feat, z, prev)
        loss = loss + F.mse_loss(out, img[i]) + beta * kl_divergence(mu, logvar, "sum_batch")
        prev = img[i] if teacher_forcing else out.detach()
    loss = loss / (len(img) - 1)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


@torch.no_grad()
def template_rollout(model, first, labels):
    """The template's val_one_step: per frame the pose and the previous frame encoded, z drawn, a frame made."""
    model.eval()
    prev, frames = first[None], [first]
    for i in range(1, len(labels)):
        z = torch.randn(1, model.N_dim, IMG_H, IMG_W, device=labels.device)
        prev = model.generate(model.frame_transformation(prev), model.label_transformation(labels[i:i + 1]), z, prev)
        frames.append(prev[0])
    return torch.stack(frames)


def looped(iterable_factory):
    """An endless iterator over a re-created iterable (a DataLoader's epochs, a list of batches)."""
    while True:
        yield from iterable_factory()


def template_training(config, device, data_dir, teacher_forcing, steps):
    """One call = `steps` steps of the template's loop over its own DataLoader, from the same initial weights."""
    torch.manual_seed(0)
    model = model_from_config(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loader = torch.utils.data.DataLoader(TemplateClips(data_dir), batch_size=BATCH, shuffle=True, drop_last=True,
                                         num_workers=min(4, max(1, (os.cpu_count() or 2) // 2)),
                                         persistent_workers=True)
    clips = looped(lambda: loader)

    def calls():
        model.train()
        for _ in range(steps):
            img, label = next(clips)
            template_step(model, opt, img.to(device), label.to(device), 0.5, teacher_forcing)
    return calls
