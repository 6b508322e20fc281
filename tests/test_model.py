"""The CVAE modules: the template's names and sizes, the resolution kept, the output forms, the log-variance clamp."""
import pytest
import torch

from tune_cvae.lab.model import CVAE


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
