"""v-prediction: its target and its conversion back to a noise estimate, against the
definitions (Salimans and Ho 2022) and an exact DDIM round trip."""

from __future__ import annotations

import torch

from dosediff.diffusion.ddim import ddim_sample
from dosediff.diffusion.loss import diffusion_loss
from dosediff.diffusion.parametrization import to_epsilon, training_target
from dosediff.diffusion.schedule import linear_schedule, q_sample


def test_v_target_and_inverse_recover_the_noise():
    abar = linear_schedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    v = training_target("v", x0, noise, t, abar)
    a = abar[t].sqrt().float().view(-1, 1, 1, 1)
    s = (1 - abar[t]).sqrt().float().view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a * noise - s * x0)
    x_t = q_sample(x0, t, noise, abar)
    torch.testing.assert_close(to_epsilon("v", v, x_t, t, abar), noise, atol=1e-5, rtol=0)
    assert training_target("epsilon", x0, noise, t, abar) is noise


def test_loss_of_a_v_oracle_is_zero_and_of_an_eps_oracle_is_not():
    abar = linear_schedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 6, 6, generator=g) * 2 - 1
    noise = torch.randn(3, 1, 6, 6, generator=g)
    t = torch.tensor([10, 500, 990])
    v_oracle = lambda y, tt: training_target("v", x0, noise, tt, abar)  # noqa: E731
    assert diffusion_loss(v_oracle, x0, abar, t=t, noise=noise, prediction="v") < 1e-12
    eps_oracle = lambda y, tt: noise  # noqa: E731
    assert diffusion_loss(eps_oracle, x0, abar, t=t, noise=noise, prediction="v") > 1e-2


def test_ddim_with_a_v_oracle_returns_the_clean_image():
    """A network that outputs the exact v of a fixed x0 makes DDIM land on that x0."""
    abar = linear_schedule()
    x0 = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 8, 8)

    def model_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].sqrt().float().view(-1, 1, 1, 1)
        s = (1 - abar[t]).sqrt().float().view(-1, 1, 1, 1)
        eps = (y_t - a * x0) / s  # the noise this y_t carries
        v = a * eps - s * x0
        return to_epsilon("v", v, y_t, t, abar)

    out = ddim_sample(model_fn, (1, 1, 8, 8), abar, steps=8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
