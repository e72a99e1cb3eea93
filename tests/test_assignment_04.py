"""Assignment 4: its plausible mistakes and its own checks; the tests every assignment shares
(solutions accepted, mistakes rejected, strict mode, the notebooks) run from ``SPEC`` in test_assignments.py."""


import pytest
import torch
from torch.nn import functional as F

from assignment_support import Assignment, CHAPTERS, load_solutions
from dgm.checks import a04

SOURCE = CHAPTERS / "04_assignment.ipynb"

CHECKERS = {
    "discriminator_loss": a04.check_discriminator_loss,
    "generator_loss": a04.check_generator_loss,
    "gan_step": a04.check_gan_step,
    "mode_coverage": a04.check_mode_coverage,
}


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(SOURCE)


def test_checkers_leave_the_global_random_state_alone(solutions):
    before = torch.get_rng_state()
    a04.check_gan_step(solutions["gan_step"], strict=False)
    a04.check_mode_coverage(solutions["mode_coverage"], strict=False)
    assert torch.equal(before, torch.get_rng_state())


# ---------------------------------------------------------------------------
# plausible wrong implementations
# ---------------------------------------------------------------------------
def d_labels_swapped(real_logits, fake_logits):
    return F.softplus(real_logits).mean() + F.softplus(-fake_logits).mean()


def d_classification_error(real_logits, fake_logits):
    return 0.5 * (1 - torch.sigmoid(real_logits)).mean() + 0.5 * torch.sigmoid(fake_logits).mean()


def d_one_mean(real_logits, fake_logits):
    return torch.cat([F.softplus(-real_logits), F.softplus(fake_logits)]).mean()


def d_naive_log(real_logits, fake_logits):
    return -(torch.log(torch.sigmoid(real_logits)).mean() + torch.log(1 - torch.sigmoid(fake_logits)).mean())


def d_value_not_loss(real_logits, fake_logits):
    return -(F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def g_saturating(fake_logits):
    return -F.softplus(fake_logits).mean()


def g_labels_swapped(fake_logits):
    return F.softplus(fake_logits).mean()


def g_probabilities(fake_logits):
    return -torch.sigmoid(fake_logits).mean()


def _d_loss(real_logits, fake_logits):
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def step_detach_in_g_step(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z).detach()  # detached once for both updates: G gets no gradient
    d_loss = _d_loss(discriminator(real), discriminator(fake))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = F.softplus(-discriminator(fake)).mean()
    opt_g.zero_grad()
    if g_loss.requires_grad:
        g_loss.backward()
    opt_g.step()
    return d_loss, g_loss


def step_no_detach_no_zero_grad(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z)
    d_loss = _d_loss(discriminator(real), discriminator(fake))  # not detached: D's loss reaches G
    opt_d.zero_grad()
    d_loss.backward(retain_graph=True)
    opt_d.step()
    g_loss = F.softplus(-discriminator(fake)).mean()
    g_loss.backward()  # no opt_g.zero_grad(): G also follows D's loss
    opt_g.step()
    return d_loss, g_loss


def step_g_moves_d(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z)
    g_loss = F.softplus(-discriminator(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    d_loss = _d_loss(discriminator(real), discriminator(fake.detach()))
    d_loss.backward()  # no opt_d.zero_grad(): D also follows G's loss
    opt_d.step()
    return d_loss, g_loss


def step_saturating(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z)
    d_loss = _d_loss(discriminator(real), discriminator(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = -F.softplus(discriminator(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss, g_loss


def coverage_unscaled(samples, modes, std):
    d, nearest = torch.cdist(samples, modes).min(1)
    good = d <= 3  # not scaled by std
    return nearest[good].unique().numel(), good.float().mean().item()


def coverage_all_samples_capture(samples, modes, std):
    d, nearest = torch.cdist(samples, modes).min(1)
    good = d <= 3 * std
    return nearest.unique().numel(), good.float().mean().item()


def coverage_squared(samples, modes, std):
    d, nearest = (torch.cdist(samples, modes) ** 2).min(1)
    good = d <= 3 * std
    return nearest[good].unique().numel(), good.float().mean().item()


def coverage_counts_samples(samples, modes, std):
    d, nearest = torch.cdist(samples, modes).min(1)
    good = d <= 3 * std
    return nearest[good].unique().numel(), int(good.sum())


D_1 = "D unsure everywhere: all logits 0 (answer 2 log 2 = 1.3863)"
D_2 = "real logits [2, 3], fake logits [-1, 0, 1]"
G_2 = "logits [-3, 0, 2]"
STEP_1 = "latent 3, batch 8"
COV_1 = "3 samples, 2 modes, std 0.1: answer (1, 2/3)"
COV_2 = "ring of 8 (std 0.01): samples on 5 modes, some blurred, some between"

WRONG = [
    # (checker, wrong implementation, the first case that must fail, text the report must contain)
    ("discriminator_loss", d_labels_swapped, D_2, "labels swapped (real = 0, fake = 1)"),
    ("discriminator_loss", d_classification_error, D_1, "the classification error instead of the log loss"),
    ("discriminator_loss", d_one_mean, D_1, "one mean over the concatenated batch"),
    ("discriminator_loss", d_naive_log, "hidden: extreme logits +-200 (log(sigmoid) would give -inf)", "softplus"),
    ("discriminator_loss", d_value_not_loss, D_1, "the value V(D, G) instead of a loss to minimise"),
    ("generator_loss", g_saturating, "D unsure: logits 0 (answer log 2 = 0.6931)", "the saturating loss"),
    ("generator_loss", g_labels_swapped, G_2, "labels swapped (fakes labelled 0, as in D's loss)"),
    ("generator_loss", g_probabilities, "D unsure: logits 0 (answer log 2 = 0.6931)",
     "probabilities instead of log-probabilities"),
    ("gan_step", step_detach_in_g_step, STEP_1, "G got no gradient"),
    ("gan_step", step_no_detach_no_zero_grad, STEP_1, "opt_g.zero_grad() before g_loss.backward()"),
    ("gan_step", step_g_moves_d, STEP_1, "make sure G's loss does not also move D"),
    ("gan_step", step_saturating, STEP_1, "non-saturating loss"),
    ("mode_coverage", coverage_unscaled, COV_1, "distances not scaled by sigma"),
    ("mode_coverage", coverage_all_samples_capture, COV_1, "not only high-quality ones"),
    ("mode_coverage", coverage_squared, COV_2, "squared distance compared with 3 sigma"),
    ("mode_coverage", coverage_counts_samples, COV_1, "high_quality_frac is a fraction of the samples"),
]


def test_saturation_report_tells_the_two_losses_apart(solutions):
    assert "yours 0.9997" in a04.saturation_report(solutions["generator_loss"])
    assert "yours 0.0003" in a04.saturation_report(g_saturating)


SPEC = Assignment(
    number="04", checkers=CHECKERS, wrong=WRONG, stubs=4, min_hidden_cases=2,
    strict_example=("generator_loss", g_saturating, "the saturating loss"),
    leaks=("softplus(-real_logits)", "softplus(-fake_logits)", "3 * std"),
    source_expect=("your metric:",),
)
