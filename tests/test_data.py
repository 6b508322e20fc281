"""The LAB4 loader: layout checks with one-line errors naming the path, conversions, sizes, order, cache."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_lab4
from tune_cvae.lab.data import DataError, load_dataset, to_rgb8


@pytest.fixture
def root(tmp_path):
    return write_lab4(tmp_path / "LAB4_Dataset")


def error_of(root):
    with pytest.raises(DataError) as exc:
        load_dataset(root, progress=False)
    return str(exc.value)


def test_loads_any_size_into_uint8_32x64(tmp_path):
    data = load_dataset(write_lab4(tmp_path / "d", size=(120, 50), n_train=40, n_val=5, n_test=2), progress=False)
    assert data.train_img.shape == (40, 3, 32, 64) and data.train_img.dtype == torch.uint8
    assert data.val_label.shape == (5, 3, 32, 64)
    assert data.test_first.shape == (2, 3, 32, 64) and data.test_label.shape == (2, 630, 3, 32, 64)
    assert len(data.clip_starts(16, 1.0)) == 2 and len(data.clip_starts(16, 0.5)) == 1


def test_frames_sorted_by_number_not_string(root):
    folder = root / "train/train_img"
    for n in range(40):  # frame n is filled with grey level n, so order can be read back
        Image.new("RGB", (32, 16), (n, n, n)).save(folder / f"frame{n}.png")
    data = load_dataset(root, progress=False)
    assert data.train_img[:, 0, 0, 0].tolist() == list(range(40))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_grayscale_palette_rgba_become_rgb(root, mode):
    rgb = Image.new("RGB", (64, 32), (200, 100, 50))
    rgb.convert(mode).save(root / "train/train_img/frame1.png")
    data = load_dataset(root, progress=False)
    expected = np.asarray(rgb.convert(mode).convert("RGB")).transpose(2, 0, 1)
    assert torch.equal(data.train_img[1], torch.from_numpy(expected.copy()))


REF = np.add.outer(np.arange(32) * 4, np.arange(64) * 2).astype(np.uint8)  # an 8-bit grey reference, 0..250


def _in_mode(mode):
    """REF as a PIL image of `mode`, holding the same grey levels at that mode's depth."""
    if mode in ("I;16", "I;16B", "I;16L"):  # raw bytes in the mode's byte order (PIL's convert loses values)
        order = ">u2" if mode == "I;16B" else "<u2"
        return Image.frombytes(mode, (64, 32), (REF.astype(np.uint16) * 257).astype(order).tobytes())
    if mode == "I":
        return Image.fromarray(REF.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(REF.astype(np.float32))
    if mode == "1":
        return Image.fromarray(REF).point(lambda v: 255 * (v >= 128)).convert("1")
    return Image.fromarray(REF).convert(mode)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "F"])
def test_every_mode_decodes_to_the_right_8_bit_rgb(mode):
    im = _in_mode(mode)
    assert im.mode == mode
    expected = REF if mode != "1" else np.where(REF >= 128, 255, 0)
    got = np.asarray(to_rgb8(im)).astype(int)
    assert got.shape == (32, 64, 3) and np.abs(got - expected[..., None]).max() <= (1 if mode == "P" else 0)


def test_a_16_bit_png_is_not_white(root):
    Image.fromarray(REF.astype(np.uint16) * 257).save(root / "train/train_img/frame2.png")
    with Image.open(root / "train/train_img/frame2.png") as im:
        assert im.mode == "I;16"
    data = load_dataset(root, progress=False)
    assert torch.equal(data.train_img[2], torch.from_numpy(np.repeat(REF[None], 3, axis=0)))


def test_tiny_or_squashed_images_warn_once(root, capsys):
    Image.new("RGB", (1, 1)).save(root / "train/train_img/frame0.png")
    Image.new("RGB", (3, 3)).save(root / "train/train_img/frame1.png")
    load_dataset(root, progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "is 1x1" in warnings[0]


def test_missing_split_folder(root):
    (root / "val/val_label").rename(root / "val/other")
    assert "val/val_label: missing folder" in error_of(root)


def test_missing_dataset_folder(tmp_path):
    assert f"{tmp_path / 'nope'}: dataset folder does not exist" in error_of(tmp_path / "nope")


def test_image_without_label(root):
    os.remove(root / "train/train_label/frame3.png")
    msg = error_of(root)
    assert "train/train_img/frame3.png: image has no label" in msg


def test_label_without_image(root):
    os.remove(root / "val/val_img/frame2.png")
    assert "val/val_label/frame2.png: label has no image" in error_of(root)


def test_truncated_png(root):
    path = root / "train/train_img/frame5.png"
    path.write_bytes(path.read_bytes()[:200])
    assert f"{path}: unreadable or truncated PNG" in error_of(root)


def test_garbage_png(root):
    path = root / "test/test_label/0/frame17.png"
    path.write_bytes(b"not a png at all")
    assert f"{path}: unreadable or truncated PNG" in error_of(root)


@pytest.mark.parametrize("name", ["img_3.png", "frame3.jpg", "frame03a.png", "Frame3.png"])
def test_bad_file_name(root, name):
    (root / "train/train_img" / name).write_bytes(b"")
    assert f"train/train_img/{name}: not a frame<N>.png file" in error_of(root)


def test_hidden_files_are_ignored(root):
    (root / "train/train_img/.DS_Store").write_bytes(b"x")
    assert load_dataset(root, progress=False).train_img.shape[0] == 40


def test_test_video_without_630_poses(root):
    os.remove(root / "test/test_label/0/frame629.png")
    assert "test/test_label/0: a test video needs exactly 630 poses" in error_of(root)


def test_test_video_without_first_frame(root):
    os.remove(root / "test/test_img/0/frame0.png")
    assert "test/test_img/0/frame0.png: missing first frame" in error_of(root)


def test_empty_split(root):
    for folder in ("train/train_img", "train/train_label"):
        for f in (root / folder).iterdir():
            f.unlink()
    assert "train/train_img: empty split" in error_of(root)


def test_cache_skips_decoding_and_notices_changes(root, monkeypatch):
    first = load_dataset(root, progress=False)

    def no_decode(path):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr("tune_cvae.lab.data.decode_png", no_decode)
    second = load_dataset(root, progress=False)
    assert torch.equal(first.train_img, second.train_img) and torch.equal(first.test_label, second.test_label)
    path = root / "train/train_img/frame0.png"
    Image.new("RGB", (32, 16), (1, 2, 3)).save(path)
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(root, progress=False)


def test_cli_bad_data_is_one_line_exit_2(root):
    os.remove(root / "train/train_label/frame3.png")
    proc = subprocess.run([sys.executable, "-m", "tune_cvae", "train", "--DR", str(root), "--save_root",
                           str(root.parent / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {root}/train/train_img/frame3.png: image has no label "
                                                f"{root}/train/train_label/frame3.png"]
    assert not (root.parent / "out").exists()  # nothing half-written


def test_symlink_loop_is_one_line(root):
    frame = root / "train/train_img/frame3.png"
    frame.unlink()
    frame.symlink_to(frame.name)  # points at itself
    assert f"{frame}: cannot read (Too many levels of symbolic links)" in error_of(root)
