"""The fast training path computes the template's function; the speed benchmark runs and prints its table."""
import copy
import json
import platform
import resource
import subprocess
import sys

import pytest
import torch

from helpers import TINY, write_lab4
from tune_cvae.config import make_config
from tune_cvae.model import CVAE, Conv1x1, batch_loss, model_from_config, posterior_noise, rollout
from tune_cvae.speed import TemplateProcess, _template_rollout_segments, rollout_in_segments, table_row
from tune_cvae.template import template_step
from tune_cvae.train import Run, train, train_steps

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


def test_speed_benchmark_prints_its_table(tmp_path):
    """On a LAB4 folder of another image size with a 12-frame validation video (the rollout's length)."""
    data = write_lab4(tmp_path / "lab4", size=(48, 96), n_train=64, n_val=12)
    out = subprocess.run([sys.executable, "-m", "tune_cvae.bench", "speed", "--model", "small", "--data",
                          str(data), "--reps", "1", "--min-seconds", "0", "--threads", "1",
                          "--json", str(tmp_path / "speed.json")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training, teacher forcing on" in out.stdout and "rollout of 12 frames" in out.stdout
    table = json.loads((tmp_path / "speed.json").read_text())["table"]
    assert [row["what"] for row in table] == ["training, teacher forcing on", "training, teacher forcing off",
                                              "rollout of 12 frames"]
    assert all(row["project"] > 0 and row["template_loop"] > 0 and row["ratio"] > 0 for row in table)
    for row in table:  # the median of the rounds' ratios, inside their range (one round here: its own)
        low, high = map(float, row["ratio_range"].split("-"))
        assert low - 0.005 <= row["ratio"] <= high + 0.005


def test_a_table_row_gives_the_median_of_the_rounds_ratios_and_their_range():
    """Rounds of frames/s: speeds shown as medians (or seconds per rollout), the ratio paired round by round."""
    row = table_row("training", [10.0, 30.0, 12.0], [10.0, 10.0, 4.0])
    assert (row["project"], row["template_loop"], row["ratio"], row["ratio_range"]) == (12.0, 10.0, 3.0, "1.00-3.00")
    row = table_row("rollout", [2.0, 4.0, 5.0], [1.0, 2.0, 4.0], frames=20)
    assert (row["unit"], row["project"], row["template_loop"], row["ratio"]) == ("s", 5.0, 10.0, 2.0)
    assert table_row("compiled", [5.0])["ratio_range"] == ""


def test_a_rollout_timed_in_segments_makes_the_whole_video_once_per_round_of_calls():
    """Each segment goes on from the frame the previous segment ended with; the segments' poses cover the video
    once; after the last segment the video starts again from its true first frame."""
    calls = []

    def fake_rollout(first, poses):  # a frame per pose after the first: 10 x the pose's number
        calls.append((first.item(), poses.tolist()))
        return torch.cat([first.view(1), 10 * poses[1:]])

    call = rollout_in_segments(fake_rollout, torch.tensor(-1.0), torch.arange(12.0), 4)
    for _ in range(5):
        call()
    starts = [first for first, _ in calls]
    assert starts[0] == -1 and starts[4] == -1
    assert starts[1:4] == [10 * poses[-1] for _, poses in calls[:3]]
    assert [pose for _, poses in calls[:4] for pose in poses[1:]] == list(range(1, 12))


def test_a_template_loop_whose_process_dies_ends_the_measurement_with_one_error():
    """Its traceback is the child's; the benchmark says the process ended instead of a broken pipe's traceback."""
    with pytest.raises(RuntimeError, match=r"the template loop's process ended \(exit code 1\)"):
        with TemplateProcess(_template_rollout_segments, config=make_config({}), device="cpu", weights=None,
                             first=None, labels=None, segments=1) as loop:
            loop(1)


def test_speed_benchmark_refuses_a_bad_flag_in_one_line():
    out = subprocess.run([sys.executable, "-m", "tune_cvae.bench", "speed", "--reps", "0"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip() == "error: --reps 0: must be at least 1"


def test_config_knows_precision_and_compile():
    assert make_config({"precision": "bf16", "compile": True})["precision"] == "bf16"
    with pytest.raises(Exception, match="precision"):
        make_config({"precision": "fp16"})
