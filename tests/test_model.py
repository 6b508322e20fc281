"""The CVAE modules, the KL forms, the training step and the rollout."""
import pytest
import torch

from tune_cvae.model import CVAE, batch_loss, frame_loss, kl_divergence, psnr_per_frame, rollout


def test_template_sizes_have_about_1_6_million_parameters():
    model = CVAE()  # F_dim=128, L_dim=32, N_dim=12, D_out_dim=192
    assert 1.5e6 < sum(p.numel() for p in model.parameters()) < 1.7e6
    assert [name for name, _ in model.named_children()] == [
        "frame_transformation", "label_transformation", "Gaussian_Predictor", "Decoder_Fusion", "Generator"]


def test_modules_keep_the_32x64_resolution():
    model = CVAE(32, 8, 4, 32)
    frame_feat = model.frame_transformation(torch.rand(2, 3, 32, 64))
    label_feat = model.label_transformation(torch.rand(2, 3, 32, 64))
    z, mu, logvar = model.Gaussian_Predictor(frame_feat, label_feat)
    assert frame_feat.shape == (2, 32, 32, 64) and label_feat.shape == (2, 8, 32, 64)
    assert z.shape == mu.shape == logvar.shape == (2, 4, 32, 64)
    out = model.generate(frame_feat, label_feat, z, torch.rand(2, 3, 32, 64))
    assert out.shape == (2, 3, 32, 64) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_batch_loss_gives_finite_losses_and_gradients(teacher_forcing):
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32)
    img, label = torch.rand(2, 5, 3, 32, 64), torch.rand(2, 5, 3, 32, 64)
    loss, mse, kl = batch_loss(model, img, label, 0.5, teacher_forcing, "sum_batch")
    assert loss.item() == pytest.approx(mse.item() + 0.5 * kl.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_kl_forms_differ_by_the_number_of_latent_values_per_sample():
    mu, logvar = torch.randn(3, 12, 32, 64), torch.randn(3, 12, 32, 64) * 0.1
    per_sample = 12 * 32 * 64  # 24,576 latent values per frame
    assert kl_divergence(mu, logvar, "sum_batch").item() == pytest.approx(
        kl_divergence(mu, logvar, "mean").item() * per_sample, rel=1e-4)
    assert kl_divergence(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), "mean").item() == 0


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


@pytest.mark.parametrize("activation", ["sigmoid", "clamp"])
def test_a_new_residual_model_repeats_the_previous_frame(activation):
    model = CVAE(32, 8, 4, 32, output_activation=activation, output="residual")
    prev = torch.rand(2, 3, 32, 64) * 0.9 + 0.05
    feats = model.frame_transformation(prev), model.label_transformation(torch.rand(2, 3, 32, 64))
    out = model.generate(*feats, torch.zeros(2, 4, 32, 64), prev)
    assert torch.allclose(out, prev, atol=1e-5)


def test_logvar_clamp_bounds_the_posterior_log_variance():
    model = CVAE(32, 8, 4, 32, logvar_clamp=0.5)
    with torch.no_grad():
        model.Gaussian_Predictor[-1].bias.fill_(30.0)  # a runaway log-variance
    _, _, logvar = model.Gaussian_Predictor(torch.rand(1, 32, 32, 64), torch.rand(1, 8, 32, 64))
    assert logvar.max().item() == 0.5


def test_frame_loss_is_mse_plus_beta_kl_of_one_frame():
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32)
    prev, img, label = torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64)
    loss, mse, kl, pred = frame_loss(model, prev, img, label, 0.25, "mean")
    assert pred.shape == img.shape and mse.item() == pytest.approx(((pred - img) ** 2).mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(mse.item() + 0.25 * kl.item(), rel=1e-5)
