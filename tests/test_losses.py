"""The training objective: the batch loss, the two KL forms, the one-frame loss."""
import pytest
import torch

from tune_cvae.lab.losses import batch_loss, frame_loss, kl_divergence
from tune_cvae.lab.model import CVAE


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


def test_frame_loss_is_mse_plus_beta_kl_of_one_frame():
    torch.manual_seed(0)
    model = CVAE(32, 8, 4, 32)
    prev, img, label = torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64)
    loss, mse, kl, pred = frame_loss(model, prev, img, label, 0.25, "mean")
    assert pred.shape == img.shape and mse.item() == pytest.approx(((pred - img) ** 2).mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(mse.item() + 0.25 * kl.item(), rel=1e-5)
