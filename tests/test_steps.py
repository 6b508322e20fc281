"""The training steps compute the template's function: batched, in pieces, channels-last, split over threads,
compiled on CUDA, in bf16; the malloc setting they run with; divergence still caught without a check per step."""
import copy
import platform
import resource

import pytest
import torch

from helpers import TINY
from tune_cvae.bench.reference_loop import template_step
from tune_cvae.lab.losses import batch_loss, posterior_noise
from tune_cvae.lab.model import CVAE, Conv1x1, model_from_config
from tune_cvae.lab.train import Run, train, train_steps

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def _same_grads(got, want, rel=1e-5):
    """Each tensor within `rel` of its own size; a gradient that is zero in exact arithmetic (the pose encoder's
    conv bias, which BatchNorm cancels) is rounding noise, so each is also allowed rel of 1e-3 of the whole."""
    whole = torch.cat([w.flatten() for w in want]).norm()
    return all((g - w).norm() <= rel * max(w.norm(), 1e-3 * whole) for g, w in zip(got, want))


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_batched_step_equals_the_templates_frame_by_frame_loop(teacher_forcing):
    """The one intended difference: the pose encoder's BatchNorm normalises over all frames of the batch, not
    over each frame's 2 clips; with its running statistics (eval mode) the two steps are the same function."""
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32)
    model.label_transformation[2].eval()
    img, label = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    eps = posterior_noise(model, img)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes nothing: the gradients stay readable
    template_loss = template_step(model, opt, img, label, 0.5, teacher_forcing, grad_clip=1e9,
                                  eps=eps.unflatten(0, (2, 5)))
    template_grads = _grads(model)
    model.zero_grad()
    loss, _, _ = batch_loss(model, img, label, 0.5, teacher_forcing, "sum_batch", eps)
    loss.backward()
    assert loss.item() == pytest.approx(template_loss, rel=1e-5)
    assert _same_grads(_grads(model), template_grads)


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_a_step_in_pieces_equals_the_step_at_once(teacher_forcing):
    """The CPU path runs the batched modules on a few frames at a time (faster in cache): the same function."""
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32)
    img, label = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    eps = posterior_noise(model, img)
    out = []
    for piece in (None, 3):
        model.zero_grad()
        loss = batch_loss(model, img, label, 0.5, teacher_forcing, "sum_batch", eps, piece)[0]
        loss.backward()
        out.append((loss.item(), _grads(model)))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-5)
    assert _same_grads(out[1][1], out[0][1])


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_a_cpu_run_trains_channels_last_and_that_step_equals_the_nchw_step(short_val, teacher_forcing):
    """On a CPU, Run keeps its model channels-last, so its 1x1 layers run as products over the pixels and its
    frames stay channels-last through the step (2 clips: flattened with a copy); the same function as NCHW. The
    pose encoder's BatchNorm in eval mode: in training mode its backward cancels large terms, and float32's
    summation-order noise (about 1e-4 of the 7x7 kernel's gradient) would hide what this checks."""
    run = Run({**TINY, "train_vi_len": 6}, short_val)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in run.model.parameters() if p.dim() == 4)
    assert all(m.product for m in run.model.modules() if isinstance(m, Conv1x1))
    run.model.label_transformation[2].eval()
    nchw = model_from_config(run.config)
    nchw.load_state_dict(run.model.state_dict())
    nchw.label_transformation[2].eval()
    layouts = []  # of every convolution's input but the images' and poses' (3 channels, as they come)
    for m in run.model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3:
            m.register_forward_hook(lambda m, x, y: layouts.append(x[0].is_contiguous(
                memory_format=torch.channels_last)))
    img, label = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    eps = posterior_noise(run.model, img)
    out = []
    for model in (nchw, run.model):
        loss = batch_loss(model, img, label, 0.5, teacher_forcing, "sum_batch", eps)[0]
        loss.backward()
        out.append((loss.item(), _grads(model)))
    assert layouts and all(layouts)
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-5)
    assert _same_grads(out[1][1], out[0][1])


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("kl_reduction", ["sum_batch", "mean"])
def test_a_cpu_step_split_over_threads_equals_the_whole_step(short_val, teacher_forcing, kl_reduction):
    """With 2 torch threads a CPU run gives each clip of a batch its own thread (forward and backward); the pose
    encoder still sees the whole batch: same loss, gradients and BatchNorm statistics as the step at once. In
    float64, so that float32's summation-order noise (about 1e-5 of a bias gradient) cannot hide a wrong term."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = Run({**TINY, "train_vi_len": 4, "kl_reduction": kl_reduction}, short_val)
    finally:
        torch.set_num_threads(threads)
    assert run.train_step.threads == 2
    run.model.double()
    idx = torch.arange(4)[None] + torch.tensor([[0], [4]])
    img, label = short_val.train_img[idx].double() / 255, short_val.train_label[idx].double() / 255
    eps = posterior_noise(run.model, img).double()
    whole = copy.deepcopy(run.model)
    want = batch_loss(whole, img, label, 0.5, teacher_forcing, kl_reduction, eps)
    want[0].backward()
    run.opt.zero_grad(set_to_none=True)
    got = run.train_step.backward(img, label, 0.5, teacher_forcing, eps)
    assert [g.item() for g in got] == pytest.approx([w.item() for w in want], rel=1e-12)
    assert _same_grads(_grads(run.model), _grads(whole), rel=1e-9)
    assert torch.equal(run.model.label_transformation[2].running_var, whole.label_transformation[2].running_var)


def test_cpu_training_steps_reuse_their_memory_instead_of_faulting_it_in_again(short_val):
    """Without keep_freed_memory every step of this run faults in about 30,000 fresh pages (measured), the cost
    of handing each activation back to the OS when freed; with it, a warmed-up run faults almost none."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc's malloc")
    run = Run({**TINY, "train_vi_len": 16}, short_val)
    batches = short_val.clip_starts(16, 1.0)[:8].view(-1, 2)
    for _ in range(2):
        train_steps(run, batches, 0.5, True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_steps(run, batches, 0.5, True)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(batches) < 3000


def test_noise_drawn_in_one_call_is_the_noise_the_posterior_would_draw():
    model = CVAE(32, 8, 4, 32)
    img, label = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
    torch.manual_seed(3)
    inside = batch_loss(model, img, label, 1.0, True, "sum_batch")[0]
    torch.manual_seed(3)
    given = batch_loss(model, img, label, 1.0, True, "sum_batch", posterior_noise(model, img))[0]
    assert inside.item() == given.item()


def test_a_diverging_run_is_still_stopped_without_a_check_per_step(short_val):
    final, run = train({**TINY, "num_epoch": 3, "partial": 0.5, "train_vi_len": 4, "lr": 1e4, "grad_clip": 0.0},
                       short_val)
    assert final["diverged"] and final["epoch"] < 3 and final["loss"] != final["loss"]


def test_bf16_precision_trains_and_keeps_float32_weights(short_val):
    final, run = train({**TINY, "num_epoch": 1, "partial": 0.05, "train_vi_len": 4, "precision": "bf16"}, short_val)
    assert not final["diverged"] and final["val_psnr"] > 5
    assert all(p.dtype == torch.float32 for p in run.model.parameters())


@CUDA
@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_compiled_cuda_step_equals_the_eager_step(short_val, teacher_forcing):
    data = short_val
    runs = [Run({**TINY, "train_vi_len": 4, "compile": c}, data, "cuda") for c in (False, True)]
    idx = torch.arange(4)[None] + torch.tensor([[0], [4]])
    img = data.train_img[idx].cuda().float() / 255
    label = data.train_label[idx].cuda().float() / 255
    beta = torch.tensor(0.5, device="cuda")
    eps = posterior_noise(runs[0].model, img)
    out = []
    for run in runs:
        run.model.load_state_dict(runs[0].model.state_dict())
        for _ in range(2):  # the second call replays the captured graph
            run.model.zero_grad()
            loss = run.train_step.loss_fn(run.model, img, label, beta, teacher_forcing, "sum_batch", eps)[0]
            loss.backward()
        out.append((loss.item(), _grads(run.model)))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-5)
    assert _same_grads(out[1][1], out[0][1])
