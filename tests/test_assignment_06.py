"""Assignment 6: its plausible mistakes and its own checks; the tests every assignment shares
(solutions accepted, mistakes rejected, strict mode, the notebooks) run from ``SPEC`` in test_assignments.py."""

import pytest
import torch

from assignment_support import Assignment, CHAPTERS, load_solutions
from dgm.checks import a06

SOURCE = CHAPTERS / "06_assignment.ipynb"

CHECKERS = {"q_sample": a06.check_q_sample, "ddim_step": a06.check_ddim_step,
            "noise_prediction_loss": a06.check_noise_prediction_loss, "ddpm_step": a06.check_ddpm_step}


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(SOURCE)


def test_ddpm_step_is_ddim_with_eta_one(solutions):
    """With eta = 1 and t_prev = t - 1 the DDIM step is the DDPM step (the notebook says so)."""
    from dgm import diffusion as d

    betas = d.linear_betas(1000)
    eps, x_t, noise = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    for t in (999, 400, 1):
        assert torch.allclose(solutions["ddpm_step"](eps, x_t, t, betas, noise),
                              solutions["ddim_step"](eps, x_t, t, t - 1, betas, 1.0, noise), atol=1e-10)


def test_solutions_agree_with_the_package_in_float32_too(solutions):
    """The learner's functions also work on float32 tensors, as the sampler cell feeds them."""
    from dgm import diffusion as d

    betas = d.linear_betas(100)
    x0, noise = torch.randn(4, 2), torch.randn(4, 2)
    t = torch.tensor([0, 5, 50, 99])
    got = solutions["q_sample"](x0, t, noise, betas)
    assert torch.allclose(got.float(), d.q_sample(x0, t, noise, d.Schedule(betas)), atol=1e-6)


@pytest.mark.parametrize("checker,mistakes", [(a06.check_q_sample, a06.Q_SAMPLE_MISTAKES),
                                              (a06.check_ddim_step, a06.DDIM_MISTAKES),
                                              (a06.check_noise_prediction_loss, a06.LOSS_MISTAKES),
                                              (a06.check_ddpm_step, a06.DDPM_MISTAKES)])
def test_every_named_mistake_is_rejected_with_its_own_hint(checker, mistakes):
    for mistake in mistakes:
        result = checker(mistake.fn, strict=False)
        assert not result.passed, mistake.name
        assert f"this looks like: {mistake.name}" in str(result), (mistake.name, str(result))


def test_named_mistakes_by_hand():
    """Hand-written wrong answers (not the checker's own mistake functions) get the right diagnosis."""
    def q_alpha_not_abar(x0, t, noise, betas):
        alpha = (1 - betas)[t].view(-1, *[1] * (x0.ndim - 1))
        return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise

    def q_variance_not_std(x0, t, noise, betas):
        abar = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))
        return abar.sqrt() * x0 + (1 - abar) * noise

    def q_off_by_one(x0, t, noise, betas):
        abar = torch.cumprod(1 - betas, 0)[(t - 1).clamp(min=0)].view(-1, *[1] * (x0.ndim - 1))
        abar = torch.where((t == 0).view_as(abar), torch.ones_like(abar), abar)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def q_no_broadcast(x0, t, noise, betas):
        abar = torch.cumprod(1 - betas, 0)[t]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def ddim_eta_ignored(eps, x_t, t, t_prev, betas, eta, noise):
        abar = torch.cumprod(1 - betas, 0)
        prev = abar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x_t - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        return prev.sqrt() * x0 + (1 - prev).sqrt() * eps

    def ddim_wraps_minus_one(eps, x_t, t, t_prev, betas, eta, noise):
        abar = torch.cumprod(1 - betas, 0)
        prev = abar[t_prev]
        x0 = (x_t - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        sigma = eta * ((1 - prev) / (1 - abar[t]) * (1 - abar[t] / prev)).sqrt()
        return prev.sqrt() * x0 + (1 - prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise

    for fn, text in ((q_alpha_not_abar, "alpha_t instead of alpha-bar_t"),
                     (q_variance_not_std, "(1 - abar_t) instead of sqrt(1 - abar_t)"),
                     (q_off_by_one, "off by one: abar_{t-1}"),
                     (q_no_broadcast, "broadcasts")):
        result = a06.check_q_sample(fn, strict=False)
        assert not result.passed and text in str(result), (fn.__name__, str(result))
    for fn, text in ((ddim_eta_ignored, "eta ignored"), (ddim_wraps_minus_one, "t_prev = -1 read as the last")):
        result = a06.check_ddim_step(fn, strict=False)
        assert not result.passed and text in str(result), (fn.__name__, str(result))


def _q_sample_returns_x0(x0, t, noise, betas):
    return x0


SPEC = Assignment(
    number="06", checkers=CHECKERS, wrong=[], stubs=4,
    strict_example=("q_sample", _q_sample_returns_x0, "q_sample"),
    leaks=("torch.cumprod(1 - betas", "sigma**2"),
    source_expect=("t = 999: mean",),
)
