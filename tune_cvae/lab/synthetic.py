"""The built-in dataset: a procedurally animated dancing figure written in the LAB4 layout.

Pose images are coloured skeletons on black (one colour per limb); frames show a clothed figure on a background.
The frame is a pure function of the pose and the video's appearance, and motion is smooth, so the previous frame
(which shows the appearance) and the current pose determine the next frame. Test ground truth goes into
test_truth/<i>/ so that a submission can be scored.

    python -m tune_cvae synthetic OUT [--train-frames N] [--seed S] [--tempo T]

`tempo` scales how fast the dancers move (1: the built-in data; 1.5: half as fast again, a harder dataset).
"""
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tune_cvae.common import UserError, say
from tune_cvae.lab.config import BUILTIN_SEED, BUILTIN_TRAIN_FRAMES
from tune_cvae.lab.data import TEST_LEN, cache_root

DISK_H, DISK_W = 64, 128  # twice the model's 32x64: the loader's resize is always exercised
TRAIN_VIDEO_LEN = 400
N_TEST = 5
VERSION = 2

# (joint a, joint b, pose colour) per limb; joints: neck, r_elbow, r_hand, l_elbow, l_hand, hip, r_knee, r_foot,
# l_knee, l_foot, head. Limb 0 is the torso, 1-4 the arms (1, 3 upper), 5-8 the legs, 9 the neck-head line.
LIMBS = [(0, 5, (255, 0, 0)), (0, 1, (255, 170, 0)), (1, 2, (255, 255, 0)), (0, 3, (0, 255, 0)),
         (3, 4, (0, 255, 170)), (5, 6, (0, 170, 255)), (6, 7, (0, 0, 255)), (5, 8, (170, 0, 255)),
         (8, 9, (255, 0, 255)), (0, 10, (255, 255, 255))]
ARM_LIMBS, UPPER_ARMS, LEG_LIMBS = (1, 2, 3, 4), (1, 3), (5, 6, 7, 8)


N_DANCERS = 4


class Dancer:
    """One video's motion (smooth sums of sinusoids) and its dancer's appearance. As in the real Lab4 data, every
    video is shot in one studio (a shared background) and the dancers come from a small cast: `look` picks one."""

    def __init__(self, rng, look_rng, studio_rng, tempo=1.0):
        self.freq = tempo * rng.uniform(2 * math.pi / 60, 2 * math.pi / 18, size=10)
        self.phase = rng.uniform(0, 2 * math.pi, size=10)
        self.amp = rng.uniform(0.4, 1.0, size=10)
        self.x0 = rng.uniform(0.35, 0.65)
        self.scale = rng.uniform(0.8, 1.0)
        self.bg_top, self.bg_bottom = studio_rng.integers(0, 256, size=3), studio_rng.integers(0, 256, size=3)
        self.floor = studio_rng.integers(0, 256, size=3)
        self.shirt, self.pants = look_rng.integers(0, 256, size=3), look_rng.integers(0, 256, size=3)
        self.skin = np.array([look_rng.uniform(150, 255), look_rng.uniform(100, 200),
                              look_rng.uniform(70, 160)]).astype(int)
        self.hair = look_rng.integers(0, 120, size=3)

    def wave(self, k, t):
        return self.amp[k] * math.sin(self.freq[k] * t + self.phase[k])

    def skeleton(self, t):
        """The 11 joints (x, y) in pixels, in the order LIMBS uses."""
        H, W, s = DISK_H, DISK_W, DISK_H * 0.56 * self.scale
        hip = (W * self.x0 + W * 0.18 * self.wave(0, t * 0.5), H * 0.55 + H * 0.03 * self.wave(1, t))
        lean = 0.25 * self.wave(2, t)
        neck = (hip[0] + s * 0.55 * math.sin(lean), hip[1] - s * 0.55 * math.cos(lean))

        def limb(start, angle, length):
            return (start[0] + length * math.sin(angle), start[1] + length * math.cos(angle))

        r_elbow = limb(neck, 1.2 + 1.1 * self.wave(3, t), s * 0.3)
        r_hand = limb(r_elbow, 1.4 + 1.3 * self.wave(4, t), s * 0.28)
        l_elbow = limb(neck, -1.2 + 1.1 * self.wave(5, t), s * 0.3)
        l_hand = limb(l_elbow, -1.4 + 1.3 * self.wave(6, t), s * 0.28)
        r_knee = limb(hip, 0.3 + 0.45 * self.wave(7, t), s * 0.35)
        r_foot = limb(r_knee, 0.1 + 0.4 * self.wave(8, t), s * 0.33)
        l_knee = limb(hip, -0.3 + 0.45 * self.wave(9, t), s * 0.35)
        l_foot = limb(l_knee, -0.1 - 0.4 * self.wave(8, t + 7), s * 0.33)
        head = limb(neck, math.pi + lean, s * 0.22)
        return [neck, r_elbow, r_hand, l_elbow, l_hand, hip, r_knee, r_foot, l_knee, l_foot, head]

    def pose_image(self, joints):
        im = Image.new("RGB", (DISK_W, DISK_H))
        d = ImageDraw.Draw(im)
        for a, b, colour in LIMBS:
            d.line([joints[a], joints[b]], fill=colour, width=3)
        for x, y in joints:
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(255, 255, 255))
        return im

    def frame_image(self, joints):
        rows = np.linspace(0, 1, DISK_H)[:, None, None]
        bg = (self.bg_top * (1 - rows) + self.bg_bottom * rows).repeat(DISK_W, axis=1)
        bg[int(DISK_H * 0.82):] = self.floor
        im = Image.fromarray(bg.astype(np.uint8))
        d = ImageDraw.Draw(im)
        for i in LEG_LIMBS:
            d.line([joints[LIMBS[i][0]], joints[LIMBS[i][1]]], fill=tuple(self.pants), width=8)
        d.line([joints[0], joints[5]], fill=tuple(self.shirt), width=13)
        for i in ARM_LIMBS:
            colour = self.shirt if i in UPPER_ARMS else self.skin
            d.line([joints[LIMBS[i][0]], joints[LIMBS[i][1]]], fill=tuple(colour), width=6)
        hx, hy = joints[10]
        d.ellipse([hx - 7, hy - 7, hx + 7, hy + 7], fill=tuple(self.skin))
        d.chord([hx - 7, hy - 8, hx + 7, hy + 6], 180, 360, fill=tuple(self.hair))
        return im


def _write_video(job):
    """Write one video (frames and poses) into its folders; run in a worker process."""
    seed, video, length, offset, img_dir, label_dir, tempo = job
    dancer = Dancer(np.random.default_rng([seed, video]), np.random.default_rng([seed, 1, video % N_DANCERS]),
                    np.random.default_rng([seed, 2]), tempo)
    img_dir, label_dir = Path(img_dir), Path(label_dir)
    for t in range(length):
        joints = dancer.skeleton(t)
        name = f"frame{offset + t}.png"
        dancer.pose_image(joints).save(label_dir / name, compress_level=1)
        dancer.frame_image(joints).save(img_dir / name, compress_level=1)


def generate(out, train_frames=BUILTIN_TRAIN_FRAMES, seed=BUILTIN_SEED, workers=None, tempo=1.0):
    """Write the dataset into `out` (which must not exist yet); written in a temporary sibling, then renamed."""
    out = Path(out)
    if train_frames < 16:
        raise UserError(f"--train-frames {train_frames}: need at least 16 (one training clip)")
    if not 0 < tempo <= 4:
        raise UserError(f"--tempo {tempo:g}: must be in (0, 4]")
    if out.exists():
        raise UserError(f"{out}: already exists; give a new folder")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    jobs, video = [], 0
    for offset in range(0, train_frames, TRAIN_VIDEO_LEN):
        jobs.append((seed, video, min(TRAIN_VIDEO_LEN, train_frames - offset), offset,
                     tmp / "train/train_img", tmp / "train/train_label", tempo))
        video += 1
    jobs.append((seed, 1000, TEST_LEN, 0, tmp / "val/val_img", tmp / "val/val_label", tempo))
    for i in range(N_TEST):
        jobs.append((seed, 2000 + i, TEST_LEN, 0, tmp / f"test_truth/{i}", tmp / f"test/test_label/{i}", tempo))
    for job in jobs:
        Path(job[4]).mkdir(parents=True, exist_ok=True)
        Path(job[5]).mkdir(parents=True, exist_ok=True)
    try:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            list(pool.map(_write_video, jobs))
        for i in range(N_TEST):
            (tmp / f"test/test_img/{i}").mkdir(parents=True)
            shutil.copy(tmp / f"test_truth/{i}/frame0.png", tmp / f"test/test_img/{i}/frame0.png")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def builtin_dir(train_frames=BUILTIN_TRAIN_FRAMES, seed=BUILTIN_SEED):
    """The built-in dataset's folder, generated on first use; says in one line (stderr) that it is used."""
    path = cache_root() / f"builtin-v{VERSION}-n{train_frames}-seed{seed}"
    if not path.is_dir():
        say(f"no --data given: generating the built-in synthetic dataset into {path} (once)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            generate(path, train_frames, seed)
        except UserError:
            if not path.is_dir():  # another process finished first: use its copy
                raise
    else:
        say(f"no --data given: using the built-in synthetic dataset at {path}")
    return path


def resolve_data_dir(path):
    """--data as given, or the built-in dataset's folder when it is absent."""
    return Path(path).expanduser() if path else builtin_dir()


def main(args):
    """`python -m tune_cvae synthetic` (flags: cli.synthetic_flags)."""
    say(f"wrote the synthetic LAB4 dataset to {generate(args.out, args.train_frames, args.seed, tempo=args.tempo)}",
        result=True)
