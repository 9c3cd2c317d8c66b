import numpy as np
import pytest
import torch

from benchmark.diffusion import create_diffusion, space_timesteps
from conftest import FIXTURES, run_if

REF = FIXTURES / "diffusion_reference.pt"
needs_fixtures = run_if(fixtures=True)
SCHEDULES = ["betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
             "posterior_mean_coef1", "posterior_mean_coef2"]


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


@pytest.fixture(scope="module")
def ref():
    return torch.load(REF, weights_only=False)


@needs_fixtures
@pytest.mark.parametrize("respacing", ["1000", "50", "250"])
def test_schedules_and_sampler_step_match_reference(ref, respacing):
    r = ref[respacing]
    d = create_diffusion(None if respacing == "1000" else respacing)
    for name in SCHEDULES:
        assert rel_err(torch.from_numpy(getattr(d, name)), r[name]) <= 1e-6, name
    assert d.timestep_map == r["timestep_map"].tolist()
    p = r["p_sample"]
    out = d.p_mean_variance(lambda x, t: p["model_output"], p["x_t"], p["t"], clip_denoised=False)
    for key in ("mean", "log_variance", "pred_xstart"):
        assert rel_err(out[key], p[key]) <= 1e-6, key
    step = d.p_sample(lambda x, t: p["model_output"], p["x_t"], p["t"], clip_denoised=False, noise=p["noise"])
    assert rel_err(step["sample"], p["x_prev"]) <= 1e-6


@needs_fixtures
def test_training_losses_match_reference(ref):
    tl = ref["1000"]["training_losses"]
    d = create_diffusion()
    assert rel_err(d.q_sample(tl["x_start"], tl["t"], tl["noise"]), tl["x_t"]) <= 1e-6
    terms = d.training_losses(lambda x, t: tl["model_output"], tl["x_start"], tl["t"], noise=tl["noise"])
    for key in ("mse", "vb", "loss"):
        assert rel_err(terms[key], tl[key]) <= 1e-6, key


def test_vb_term_trains_only_the_variance():
    d = create_diffusion()
    x0 = torch.randn(3, 2, 4, 4)
    out = torch.randn(3, 4, 4, 4, requires_grad=True)
    terms = d.training_losses(lambda x, t: out, x0, torch.tensor([0, 10, 999]))
    terms["vb"].sum().backward()
    assert out.grad[:, :2].abs().sum() == 0 and out.grad[:, 2:].abs().sum() > 0


def test_respacing_keeps_endpoints_and_alphas():
    kept = sorted(space_timesteps(1000, "50"))
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == 999
    base, spaced = create_diffusion(), create_diffusion("50")
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12)
    assert len(space_timesteps(1000, "ddim25")) == 25


def test_model_sees_original_timesteps():
    seen = []
    d = create_diffusion("10", learn_sigma=False)

    def model(x, t, y=None):
        seen.append(t.clone())
        return torch.zeros_like(x)

    d.p_sample_loop(model, (2, 2), noise=torch.randn(2, 2), model_kwargs={"y": None})
    assert seen[0].tolist() == [999, 999] and seen[-1].tolist() == [0, 0]


def test_fixed_variance_on_2d_points():
    """The diffusion works on any tensor shape (the 2D toy uses (B, 2))."""
    d = create_diffusion("20", learn_sigma=False)
    x = d.p_sample_loop(lambda x, t: torch.zeros_like(x), (5, 2), noise=torch.randn(5, 2), clip_denoised=False)
    assert x.shape == (5, 2) and torch.isfinite(x).all()
    terms = d.training_losses(lambda x, t: torch.zeros_like(x), torch.randn(5, 2), torch.randint(0, 20, (5,)))
    assert terms["loss"].shape == (5,) and "vb" not in terms
