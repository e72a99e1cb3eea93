"""Assignment 3: its plausible mistakes and its own checks; the tests every assignment shares
(solutions accepted, mistakes rejected, strict mode, the notebooks) run from ``SPEC`` in test_assignments.py."""

import math

import pytest
import torch
from torch.nn import functional as F

from assignment_support import Assignment, CHAPTERS, load_solutions
from dgm.checks import a03
from dgm.vae import kl_to_standard_normal

SOURCE = CHAPTERS / "03_assignment.ipynb"


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(SOURCE)


CHECKERS = {
    "reparameterize": a03.check_reparameterize,
    "kl_to_standard_normal": a03.check_kl,
    "negative_elbo": a03.check_negative_elbo,
}


def test_checker_accepts_other_correct_forms():
    def sqrt_form(mu, logvar):
        return mu + torch.sqrt(torch.exp(logvar)) * torch.randn_like(mu)

    def distribution_rsample(mu, logvar):
        return torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).rsample()

    def kl_from_torch(mu, logvar):
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        return torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)

    assert a03.check_reparameterize(sqrt_form, strict=False).passed
    assert a03.check_reparameterize(distribution_rsample, strict=False).passed
    assert a03.check_kl(kl_from_torch, strict=False).passed


def test_reference_negative_elbo_matches_the_package():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 7, generator=gen) < 0.5).float()
    logits, mu, logvar = torch.randn(5, 7, generator=gen), torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    from dgm.vae import PixelLikelihood

    reconstruction = PixelLikelihood("bernoulli").log_prob(logits.unsqueeze(-1), x)
    expected = (-reconstruction + kl_to_standard_normal(mu, logvar)).mean()
    assert torch.allclose(a03.reference_negative_elbo(x, logits, mu, logvar), expected, atol=1e-5)


def test_checkers_leave_the_global_random_state_alone(solutions):
    before = torch.get_rng_state()
    a03.check_reparameterize(solutions["reparameterize"], strict=False)
    assert torch.equal(before, torch.get_rng_state())


# ---------------------------------------------------------------------------
# plausible wrong implementations
# ---------------------------------------------------------------------------
def reparam_logvar_as_std(mu, logvar):
    return mu + logvar * torch.randn_like(mu)


def reparam_missing_half(mu, logvar):
    return mu + torch.exp(logvar) * torch.randn_like(mu)


def reparam_no_trick(mu, logvar):
    return torch.normal(mu, torch.exp(0.5 * logvar)).detach()


def reparam_distribution_sample(mu, logvar):
    return torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).sample()


def reparam_uniform_noise(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.rand_like(mu)


def reparam_shared_noise(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[-1], dtype=mu.dtype)


def reparam_mean_only(mu, logvar):
    return mu.clone()


def kl_missing_half(mu, logvar):
    return (mu**2 + logvar.exp() - logvar - 1).sum(-1)


def kl_logvar_as_std(mu, logvar):
    return 0.5 * (mu**2 + logvar**2 - torch.log(logvar**2) - 1).sum(-1)


def kl_summed_over_batch(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum()


def kl_mean_over_dims(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).mean(-1)


def kl_no_minus_one(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar).sum(-1)


def kl_per_dimension(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1)


def _bce(x, logits):
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def _kl(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1)


def elbo_kl_summed_over_batch(x, logits, mu, logvar):
    return _bce(x, logits).mean() + _kl(mu, logvar).sum()


def elbo_all_summed(x, logits, mu, logvar):
    return (_bce(x, logits) + _kl(mu, logvar)).sum()


def elbo_pixel_mean(x, logits, mu, logvar):
    return F.binary_cross_entropy_with_logits(logits, x) + _kl(mu, logvar).mean()


def elbo_missing_half(x, logits, mu, logvar):
    return (_bce(x, logits) + 2 * _kl(mu, logvar)).mean()


def elbo_logvar_as_std(x, logits, mu, logvar):
    return (_bce(x, logits) + 0.5 * (mu**2 + logvar**2 - torch.log(logvar**2) - 1).sum(-1)).mean()


def elbo_wrong_sign(x, logits, mu, logvar):
    return (-_bce(x, logits) - _kl(mu, logvar)).mean()


def elbo_kl_subtracted(x, logits, mu, logvar):
    return (_bce(x, logits) - _kl(mu, logvar)).mean()


def elbo_per_example(x, logits, mu, logvar):
    return _bce(x, logits) + _kl(mu, logvar)


REPARAM = "mu, logvar of shape (2000, 3)"
KL_PRIOR = "q equals the prior: mu = 0, logvar = 0 -> KL = 0"
KL_1 = "mu = [[1, 2]], logvar = [[0, log 4]]"
ELBO_1 = "batch 4, 6 pixels, 2 latent dims"

WRONG = [
    # (checker, wrong implementation, the first case that must fail, text the report must contain)
    ("reparameterize", reparam_logvar_as_std, REPARAM, "the log-variance is used as the standard deviation"),
    ("reparameterize", reparam_missing_half, REPARAM, "the 1/2 is missing"),
    ("reparameterize", reparam_no_trick, REPARAM, "no gradient reaches the encoder"),
    ("reparameterize", reparam_distribution_sample, REPARAM, "without the reparameterisation trick"),
    ("reparameterize", reparam_uniform_noise, REPARAM, "torch.rand_like draws uniform numbers"),
    ("reparameterize", reparam_shared_noise, REPARAM, "every row got the same noise"),
    ("reparameterize", reparam_mean_only, REPARAM, "z does not depend on logvar"),
    ("kl_to_standard_normal", kl_missing_half, KL_1, "the 1/2 is missing"),
    ("kl_to_standard_normal", kl_logvar_as_std, KL_PRIOR, "log-variance treated as the standard deviation"),
    ("kl_to_standard_normal", kl_summed_over_batch, KL_PRIOR, "the average over the batch belongs in the loss"),
    ("kl_to_standard_normal", kl_mean_over_dims, KL_1, "averaged over the latent dimensions"),
    ("kl_to_standard_normal", kl_no_minus_one, KL_PRIOR, "the -1 is missing"),
    ("kl_to_standard_normal", kl_per_dimension, KL_PRIOR, "one value per latent dimension"),
    ("negative_elbo", elbo_kl_summed_over_batch, ELBO_1, "KL summed over the batch instead of averaged"),
    ("negative_elbo", elbo_all_summed, ELBO_1, "everything summed over the batch"),
    ("negative_elbo", elbo_pixel_mean, ELBO_1, "the reconstruction averaged over pixels"),
    ("negative_elbo", elbo_missing_half, ELBO_1, "the 1/2 of the KL is missing"),
    ("negative_elbo", elbo_logvar_as_std, ELBO_1, "log-variance treated as the standard deviation"),
    ("negative_elbo", elbo_wrong_sign, ELBO_1, "the wrong sign"),
    ("negative_elbo", elbo_kl_subtracted, ELBO_1, "the KL subtracted"),
    ("negative_elbo", elbo_per_example, ELBO_1, "the loss is one number"),
]


def test_a_statistically_wrong_noise_is_caught():
    def too_wide(mu, logvar):
        return mu + torch.exp(0.5 * logvar) * 1.3 * torch.randn_like(mu)

    result = a03.check_reparameterize(too_wide, strict=False)
    assert not result.passed and "should be N(0, 1)" in str(result)


def _check_source_output(text):
    numbers = {line.split(":")[0].strip(): float(line.split("nats")[0].split()[-1])
               for line in text.splitlines() if "nats per image" in line}
    # binarized digits: independent pixels ~25 nats, so the gaps are a few nats (quick mode: 400 steps)
    assert numbers["your VAE"] < numbers["independent pixels"] - 1.5, numbers
    assert numbers["VAE without the trick"] > numbers["your VAE"] + 1.5, numbers
    assert abs(numbers["VAE without the trick"] - numbers["independent pixels"]) < 1.0, numbers
    spread = float(text.split("over test images:")[1].split()[0])
    assert spread < 0.1 and math.isfinite(spread)


SPEC = Assignment(
    number="03", checkers=CHECKERS, wrong=WRONG, stubs=3,
    strict_example=("negative_elbo", elbo_kl_summed_over_batch, "KL summed over the batch"),
    leaks=("torch.exp(0.5 * logvar) * eps", "logvar.exp() - logvar - 1", "reduction=\"none\").sum(-1)\n    return"),
    source_check=_check_source_output, student_expect=("Finish exercises 1 to 3 first",),
)
