"""Noise schedule, loss and DDIM against independent values and diffusers' DDIMScheduler."""

from __future__ import annotations

import math

import pytest
import torch

from dosediff.diffusion.ddim import ddim_sample, ddim_step, ddim_timesteps
from dosediff.diffusion.loss import diffusion_loss
from dosediff.diffusion.schedule import linear_betas, linear_schedule, q_sample
from dosediff.errors import InputError

T = 1000


def diffusers_scheduler(steps: int, spacing: str = "leading"):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
        prediction_type="epsilon", timestep_spacing=spacing, thresholding=False,
    )
    sched.set_timesteps(steps)
    return sched


def fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for a network: depends on x and t, large enough to trigger clipping."""
    g = torch.Generator().manual_seed(1000 + t)
    return torch.tanh(1.3 * x) + 0.8 * torch.randn(x.shape, generator=g)


def test_schedule_matches_independent_product():
    betas = linear_betas()
    assert betas.shape == (T,) and betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    # alpha-bar_T as a sum of logs in plain Python floats, independent of torch.
    log_abar = math.fsum(math.log1p(-(1e-4 + i * (0.02 - 1e-4) / (T - 1))) for i in range(T))
    ac = linear_schedule()
    assert ac[-1].item() == pytest.approx(math.exp(log_abar), rel=1e-9)
    assert ac[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)  # the well-known DDPM value
    assert torch.all(ac[1:] < ac[:-1])


def test_schedule_matches_diffusers():
    sched = diffusers_scheduler(8)
    torch.testing.assert_close(linear_schedule().float(), sched.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_q_sample_is_eq2():
    ac = linear_schedule()
    x0 = torch.full((3, 1, 4, 4), 0.5)
    noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 499, 999])
    y = q_sample(x0, t, noise, ac)
    for i, ti in enumerate(t.tolist()):
        a = ac[ti].item()
        torch.testing.assert_close(y[i], math.sqrt(a) * 0.5 + math.sqrt(1 - a) * noise[i])


def test_loss_is_mse_of_noise_and_zero_for_an_oracle():
    ac = linear_schedule()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(4, 1, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    loss = diffusion_loss(lambda y, tt: torch.zeros_like(y), x0, ac, t=t, noise=noise)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)

    def oracle(y: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:  # inverts Eq. 2 knowing x0
        a = ac[tt].float().reshape(-1, 1, 1, 1)
        return (y - a.sqrt() * x0) / (1 - a).sqrt()

    assert diffusion_loss(oracle, x0, ac, generator=torch.Generator().manual_seed(5)).item() < 1e-8
    seen = []
    diffusion_loss(lambda y, tt: seen.append(tt) or y, x0, ac, generator=torch.Generator().manual_seed(5))
    diffusion_loss(lambda y, tt: seen.append(tt) or y, x0, ac, generator=torch.Generator().manual_seed(5))
    assert torch.equal(seen[0], seen[1]) and seen[0].min() >= 0 and seen[0].max() < T


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 8, 50])
def test_timesteps_match_diffusers(steps, spacing):
    ours = ddim_timesteps(steps, T, spacing)
    assert ours == diffusers_scheduler(steps, spacing).timesteps.tolist()
    assert len(ours) == steps and ours == sorted(ours, reverse=True)
    if spacing == "leading":
        assert ours[-1] == 0
    else:
        assert ours[0] == T - 1  # the paper's tau_S = T (1-based)


def test_leading_8_steps_values():
    assert ddim_timesteps(8) == [875, 750, 625, 500, 375, 250, 125, 0]


@pytest.mark.parametrize("clipped_eps", [True, False])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("steps", [8, 50])
def test_ddim_step_matches_diffusers(steps, eta, clipped_eps):
    sched = diffusers_scheduler(steps)
    ac = linear_schedule()
    ts = ddim_timesteps(steps)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 1, 16, 16, generator=gen)
    clipped = 0
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps = fake_eps(x, t)
        noise = torch.randn(x.shape, generator=gen)
        ref = sched.step(eps, t, x, eta=eta, use_clipped_model_output=clipped_eps,
                         variance_noise=noise if eta > 0 else None)
        x_prev, x0 = ddim_step(x, eps, t, t_prev, ac, eta=eta, noise=noise, clip_x0=True,
                               eps_from_clipped_x0=clipped_eps)
        # x0 divides by sqrt(alpha_bar_t) (0.006 at t=980), which scales float32 rounding by
        # up to 160x; diffusers orders the same operations differently.
        tol = 1e-5 / math.sqrt(ac[t].item())
        torch.testing.assert_close(x0, ref.pred_original_sample, atol=tol, rtol=0)
        torch.testing.assert_close(x_prev, ref.prev_sample, atol=1e-5, rtol=0)
        unclipped = (x - math.sqrt(1 - ac[t].item()) * eps) / math.sqrt(ac[t].item())
        clipped += int((unclipped.abs() > 1).any())
        x = ref.prev_sample  # both continue from the same state: step-for-step comparison
    assert clipped > 0  # the clipping branch was exercised


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_loop_matches_diffusers_loop(eta):
    steps, shape = 8, (2, 1, 16, 16)
    sched = diffusers_scheduler(steps)
    ours = ddim_sample(lambda y, t: fake_eps(y, int(t[0])), shape, linear_schedule(), steps=steps, eta=eta,
                       generator=torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)  # same draw order: y_T, then one noise per step
    x = torch.randn(shape, generator=gen)
    for t in sched.timesteps.tolist():
        eps = fake_eps(x, t)
        noise = torch.randn(shape, generator=gen) if eta > 0 else None
        x = sched.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_final_step_returns_clipped_x0():
    ac = linear_schedule()
    x = torch.randn(1, 1, 8, 8) * 3
    x_prev, x0 = ddim_step(x, torch.zeros_like(x), 0, -1, ac, eta=0.5, noise=torch.randn_like(x))
    torch.testing.assert_close(x_prev, x0)  # alpha-bar_prev = 1 and sigma = 0 at the last step
    assert x0.abs().max() <= 1.0


def test_same_seed_same_sample_and_different_seed_differs():
    fn = lambda y, t: fake_eps(y, int(t[0]))  # noqa: E731
    ac = linear_schedule()
    a = ddim_sample(fn, (1, 1, 8, 8), ac, steps=8, eta=0.3, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(fn, (1, 1, 8, 8), ac, steps=8, eta=0.3, generator=torch.Generator().manual_seed(1))
    c = ddim_sample(fn, (1, 1, 8, 8), ac, steps=8, eta=0.3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_settings_raise_input_errors():
    ac = linear_schedule()
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(InputError, match="noise"):
        ddim_step(x, x, 10, 5, ac, eta=0.5)
    with pytest.raises(InputError, match="steps"):
        ddim_timesteps(0)
    with pytest.raises(InputError, match="spacing"):
        ddim_timesteps(8, spacing="linspace-ish")
    with pytest.raises(InputError, match="t_prev"):
        ddim_step(x, x, 5, 5, ac)
