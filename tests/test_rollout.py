"""Rollouts: from the given first frame, z from the prior or zero, videos together as alone; PSNR per frame."""
import pytest
import torch

from helpers import TINY
from tune_cvae.lab.model import CVAE, Conv1x1
from tune_cvae.lab.rollout import psnr_per_frame, rollout
from tune_cvae.lab.train import Run

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_rollout_starts_from_the_given_frame_and_zero_z_is_deterministic():
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32)
    first, labels = torch.rand(3, 32, 64), torch.rand(7, 3, 32, 64)
    a = rollout(model, first, labels, "zero", pose_batch=3)
    assert a.shape == (7, 3, 32, 64) and torch.equal(a[0], first)
    assert torch.equal(a, rollout(model, first, labels, "zero"))
    p1 = rollout(model, first, labels, "prior", torch.Generator().manual_seed(1))
    p2 = rollout(model, first, labels, "prior", torch.Generator().manual_seed(2))
    assert not torch.equal(p1, p2)


def test_videos_rolled_out_together_are_the_videos_rolled_out_one_by_one():
    """predict_tests rolls the test videos out at once; a seed must still give each video its own z and frames."""
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32).eval()
    firsts, labels = torch.rand(3, 3, 32, 64), torch.rand(3, 7, 3, 32, 64)
    together = rollout(model, firsts, labels, "prior", torch.Generator().manual_seed(5), pose_batch=4)
    gen = torch.Generator().manual_seed(5)
    alone = torch.stack([rollout(model, f, lab, "prior", gen, pose_batch=4) for f, lab in zip(firsts, labels)])
    assert together.shape == (3, 7, 3, 32, 64) and torch.equal(together[:, 0], firsts)
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-2)  # not one video copied three times


def test_psnr_is_computed_per_frame():
    true = torch.zeros(2, 3, 4, 4)
    pred = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])
    assert psnr_per_frame(pred, true).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)


def test_prior_z_drawn_at_once_equals_drawing_it_frame_by_frame():
    """A seed gives the rollouts it gave when z was drawn per frame (validation figures stay comparable)."""
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32).eval()
    first, labels = torch.rand(3, 32, 64), torch.rand(9, 3, 32, 64)
    at_once = rollout(model, first, labels, "prior", torch.Generator().manual_seed(4), pose_batch=4)
    gen, prev, frames = torch.Generator().manual_seed(4), first[None], [first]
    with torch.no_grad():
        for t in range(1, 9):
            z = torch.randn((1, 4, 32, 64), generator=gen)
            prev = model.generate(model.frame_transformation(prev), model.label_transformation(labels[t:t + 1]), z,
                                  prev)
            frames.append(prev[0])
    assert torch.allclose(at_once, torch.stack(frames), atol=1e-6)
    # the CPU rollout's model (channels-last, 1x1 convolutions as products) is a copy; the model stays as it was
    assert all(p.is_contiguous() for p in model.parameters())
    assert not any(m.product for m in model.modules() if isinstance(m, Conv1x1))


@CUDA
def test_compiled_cuda_rollout_equals_the_eager_rollout(short_val):
    """The frame step replayed as a CUDA graph: every frame kept (a replay overwrites the previous output), and
    the weights as they are at each rollout (a change between two validations is seen, not baked in)."""
    runs = [Run({**TINY, "compile": c}, short_val, "cuda") for c in (False, True)]
    first, labels = short_val.val_img[0].cuda().float() / 255, short_val.val_label[:12].cuda().float() / 255
    for _ in range(2):
        runs[1].model.load_state_dict(runs[0].model.state_dict())
        eager, compiled = (run.rollout(first, labels, "prior", torch.Generator("cuda").manual_seed(5))
                           for run in runs)
        assert torch.allclose(compiled, eager, atol=1e-4)
        with torch.no_grad():
            for p in runs[0].model.parameters():
                p.mul_(1.01)
