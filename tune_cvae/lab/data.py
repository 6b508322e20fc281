"""LAB4-layout folder -> uint8 tensors (N, 3, 32, 64), validated, decoded once and cached.

Every problem with the folder is a DataError naming the path: the CLIs turn it into one line and exit 2.
"""
import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tune_cvae.common import UserError, say, write_whole

IMG_H, IMG_W = 32, 64
TEST_LEN = 630
FRAME_RE = re.compile(r"^frame(\d+)\.png$")
CACHE_VERSION = 1
SPLIT_DIRS = ("train/train_img", "train/train_label", "val/val_img", "val/val_label",
              "test/test_img", "test/test_label")


class DataError(UserError):
    """The dataset folder is not in the LAB4 layout, or one of its files cannot be read."""


@dataclass
class Lab4Data:
    """A decoded LAB4 dataset: every image tensor is uint8 (..., 3, IMG_H=32, IMG_W=64), values 0..255, the frames
    of a split in the order of their numbers."""
    root: str
    train_img: torch.Tensor    # (N, 3, H, W), in frame order
    train_label: torch.Tensor
    val_img: torch.Tensor      # (V, 3, H, W): one video
    val_label: torch.Tensor
    test_first: torch.Tensor   # (K, 3, H, W): the given first frame of each test video
    test_label: torch.Tensor   # (K, 630, 3, H, W)

    def clip_starts(self, vi_len: int, fraction: float) -> torch.Tensor:
        """Index of the first frame of each training clip, (clips,) int64: consecutive, non-overlapping runs of
        `vi_len` frames cut from the first `fraction` (0..1] of the sorted training list (the template's
        Dataset_Dance)."""
        n = int(self.train_img.shape[0] * fraction)
        return torch.arange(n // vi_len) * vi_len

    def as_arrays(self):
        """Plain numpy arrays (and the root) for the Ray object store, where numpy is shared zero-copy."""
        return {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays):
        """Back from as_arrays() without copying (the object store's arrays are read-only; nothing writes)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "array is not writable": we only read
            return cls(**{k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in arrays.items()})

    def to(self, device):
        """The same data with every tensor on `device` (done once per trial, not per step)."""
        fields = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Lab4Data(**fields)


def cache_root():
    return Path(os.environ.get("TUNE_CVAE_CACHE", Path.home() / ".cache" / "tune_cvae"))


def list_frames(folder):
    """[(N, DirEntry)] of the frame<N>.png files in `folder`, sorted by N (not by string); hidden files ignored."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder (expected the LAB4 layout: {', '.join(SPLIT_DIRS)})")
    frames = []
    try:
        for entry in os.scandir(folder):
            if entry.name.startswith("."):
                continue
            m = FRAME_RE.match(entry.name)
            if not m or not entry.is_file():
                raise DataError(f"{entry.path}: not a frame<N>.png file")
            frames.append((int(m.group(1)), entry))
    except OSError as e:  # a symbolic-link loop, no permission to list or stat
        raise DataError(f"{e.filename or folder}: cannot read ({e.strerror or e})") from None
    frames.sort(key=lambda f: f[0])
    return frames


def paired_frames(img_dir, label_dir, min_frames=1):
    """Image and label entries of one split or video, checked name for name."""
    imgs, labels = list_frames(img_dir), list_frames(label_dir)
    img_names = {e.name for _, e in imgs}
    label_names = {e.name for _, e in labels}
    for _, e in imgs:
        if e.name not in label_names:
            raise DataError(f"{e.path}: image has no label {label_dir / e.name}")
    for _, e in labels:
        if e.name not in img_names:
            raise DataError(f"{e.path}: label has no image {img_dir / e.name}")
    if not imgs:
        raise DataError(f"{img_dir}: empty split (no frame<N>.png files)")
    if len(imgs) < min_frames:
        raise DataError(f"{img_dir}: needs at least {min_frames} frames, found {len(imgs)}")
    return [e for _, e in imgs], [e for _, e in labels]


def video_dirs(folder):
    """Numbered sub-folders 0..K-1 of a test folder."""
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder (expected the LAB4 layout: {', '.join(SPLIT_DIRS)})")
    names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
    for name in names:
        if not name.isdigit() or not (folder / name).is_dir():
            raise DataError(f"{folder / name}: expected a numbered video folder (0, 1, ...)")
    ids = sorted(int(n) for n in names)
    if not ids:
        raise DataError(f"{folder}: empty split (no test video folders)")
    if ids != list(range(len(ids))):
        raise DataError(f"{folder}: video folders must be numbered 0..{len(ids) - 1}, found {names}")
    return [folder / str(i) for i in ids]


def test_entries(root):
    """(first-frame entries, [pose entries of each video]) of the test split, checked."""
    img_videos, label_videos = video_dirs(root / "test/test_img"), video_dirs(root / "test/test_label")
    if len(img_videos) != len(label_videos):
        raise DataError(f"{root / 'test'}: {len(img_videos)} videos in test_img but {len(label_videos)} in test_label")
    firsts, poses = [], []
    for img_dir, label_dir in zip(img_videos, label_videos):
        frames = dict((n, e) for n, e in list_frames(img_dir))
        if 0 not in frames:
            raise DataError(f"{img_dir / 'frame0.png'}: missing first frame of test video {img_dir.name}")
        labels = list_frames(label_dir)
        if [n for n, _ in labels] != list(range(TEST_LEN)):
            raise DataError(f"{label_dir}: a test video needs exactly {TEST_LEN} poses "
                            f"frame0..frame{TEST_LEN - 1}.png, found {len(labels)}")
        firsts.append(frames[0])
        poses.append([e for _, e in labels])
    return firsts, poses


def to_rgb8(im):
    """Any PIL mode -> 8-bit RGB. PIL's own convert clips 16- and 32-bit grey (I;16*, I: a 16-bit PNG) at 255,
    which turns a whole frame white: those are scaled by 255/65535 instead; float grey (F) is read as 0..255."""
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.asarray(im).astype(np.float64) * (255 / 65535)
    elif im.mode == "F":
        grey = np.asarray(im).astype(np.float64)
    else:
        return im.convert("RGB")
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")


def decode_png(path):
    """One PNG -> (uint8 (3, 32, 64), its size on disk (W, H)): any mode converted to 8-bit RGB, any size
    resized with antialiasing."""
    try:
        with Image.open(path) as im:
            size = im.size
            im = to_rgb8(im)
            if im.size != (IMG_W, IMG_H):
                im = im.resize((IMG_W, IMG_H), Image.Resampling.BILINEAR)  # PIL's filters antialias when shrinking
            return np.asarray(im).transpose(2, 0, 1), size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable or truncated PNG ({e})") from None


def decode_all(paths, desc, progress=True):
    """Decode many PNGs on a thread pool (PIL releases the GIL while inflating) with a progress bar; warns once
    when images are smaller than the model's 64x32 or not 2:1 (they are stretched to it)."""
    out = np.empty((len(paths), 3, IMG_H, IMG_W), dtype=np.uint8)
    odd = None
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, (arr, (w, h)) in enumerate(tqdm(pool.map(decode_png, paths, chunksize=64), total=len(paths),
                                               desc=desc, unit="png", disable=not progress, leave=False)):
            out[i] = arr
            if odd is None and (w < IMG_W or h < IMG_H or abs(w / h - IMG_W / IMG_H) > 0.05 * IMG_W / IMG_H):
                odd = f"{paths[i]} is {w}x{h}"
    if odd:
        say(f"warning: {odd} (width x height): images are resized to {IMG_W}x{IMG_H}, so one smaller or not 2:1 "
            f"is upscaled or stretched")
    return out


def _cache_key(root, entries):
    """Hash of every file's relative path, size and modification time: any change on disk gives a new key."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, IMG_H, IMG_W]).encode())
    for e in entries:
        st = e.stat()
        h.update(f"{os.path.relpath(e.path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def load_dataset(root, progress: bool = True) -> Lab4Data:
    """Validate a LAB4-layout folder completely (DataError naming the first wrong path), then decode it, any image
    size resized to 32x64 (or read the decoded cache, kept per folder content)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    parts = {
        "train": paired_frames(root / "train/train_img", root / "train/train_label"),
        "val": paired_frames(root / "val/val_img", root / "val/val_label", min_frames=2),
    }
    firsts, poses = test_entries(root)
    entries = [e for imgs, labels in parts.values() for e in imgs + labels] + firsts + [e for v in poses for e in v]
    cache_file = cache_root() / "decoded" / f"{_cache_key(root, entries)}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            arrays = None  # a damaged cache file is rebuilt, not trusted
    else:
        arrays = None
    if arrays is None:
        flat = decode_all([e.path for e in entries], f"decoding {root.name}", progress)
        arrays, i = {}, 0
        for name, n in [("train_img", len(parts["train"][0])), ("train_label", len(parts["train"][1])),
                        ("val_img", len(parts["val"][0])), ("val_label", len(parts["val"][1])),
                        ("test_first", len(firsts)), ("test_label", len(firsts) * TEST_LEN)]:
            arrays[name], i = flat[i:i + n], i + n
        arrays["test_label"] = arrays["test_label"].reshape(len(firsts), TEST_LEN, 3, IMG_H, IMG_W)
        _write_cache(cache_file, arrays)
    return Lab4Data(root=str(root), **{k: torch.from_numpy(v) for k, v in arrays.items()})


def _write_cache(path, arrays):
    """Written whole, so an interrupted run never leaves a half-written cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, lambda tmp: np.savez(tmp, **arrays))
    except OSError:
        pass  # no writable cache: everything still works, only the next load is slower


def load_video(folder, length: int | None = None) -> torch.Tensor:
    """All frame<N>.png of one folder (e.g. a test video's ground truth) as uint8 (T, 3, 32, 64); with `length`,
    exactly frame0..frame{length-1}.png or a DataError."""
    frames = list_frames(Path(folder))
    if length is not None and [n for n, _ in frames] != list(range(length)):
        raise DataError(f"{folder}: expected frame0..frame{length - 1}.png, found {len(frames)} frames")
    return torch.from_numpy(decode_all([e.path for _, e in frames], f"decoding {folder}", progress=False))
