"""Assignment 1: its plausible mistakes and its own checks; the tests every assignment shares
(solutions accepted, mistakes rejected, strict mode, the notebooks) run from ``SPEC`` in test_assignments.py."""

import math

import torch
from torch.nn import functional as F

from assignment_support import Assignment
from dgm.checks import a01



CHECKERS = {
    "categorical_mle": a01.check_categorical_mle,
    "nll_nats": a01.check_nll_nats,
    "kl_monte_carlo": a01.check_kl_monte_carlo,
    "kl_between": a01.check_kl_between,
}


# ---------------------------------------------------------------------------
# plausible wrong implementations
# ---------------------------------------------------------------------------
def _counts(x, k):
    return F.one_hot(x.reshape(len(x), -1).long(), k).sum(0).double()


def mle_no_smoothing(x, k, alpha):
    return _counts(x, k) / len(x)


def mle_normalised_over_pixels(x, k, alpha):
    c = _counts(x, k) + alpha
    return c / c.sum(0, keepdim=True)


def mle_alpha_once(x, k, alpha):
    return (_counts(x, k) + alpha) / (len(x) + alpha)


def mle_levels_from_data(x, k, alpha):
    k_seen = int(x.max()) + 1
    return (_counts(x, k_seen) + alpha) / (len(x) + k_seen * alpha)


def mle_transposed(x, k, alpha):
    return ((_counts(x, k) + alpha) / (len(x) + k * alpha)).T


def mle_epsilon_instead_of_zero(x, k, alpha):
    p = (_counts(x, k) + alpha) / (len(x) + k * alpha)
    return (p + 1e-8) / (p + 1e-8).sum(-1, keepdim=True)


def _log_p(probs, x):
    return probs.log().gather(1, x.reshape(len(x), -1).long().T).T  # (N, D)


def nll_mean_over_pixels(probs, x):
    return float(-_log_p(probs, x).mean())


def nll_log2(probs, x):
    return float(-(_log_p(probs, x) / math.log(2)).sum(1).mean())


def nll_sum_over_images(probs, x):
    return float(-_log_p(probs, x).sum())


def nll_wrong_sign(probs, x):
    return float(_log_p(probs, x).sum(1).mean())


def nll_one_hot_mask(probs, x):
    onehot = F.one_hot(x.reshape(len(x), -1).long(), probs.shape[1]).double()
    return float(-(onehot * probs.log()).sum((1, 2)).mean())


def nll_clamped(probs, x):
    log_p = probs.clamp(min=1e-12).log().gather(1, x.reshape(len(x), -1).long().T).T
    return float(-log_p.sum(1).mean())


def kl_sign_swapped(sample_p, log_p, log_q, n):
    x = sample_p(n)
    d = log_q(x) - log_p(x)
    return float(d.mean()), float(d.std() / math.sqrt(n))


def kl_ratio(sample_p, log_p, log_q, n):
    x = sample_p(n)
    d = (log_p(x) - log_q(x)).exp()
    return float(d.mean()), float(d.std() / math.sqrt(n))


def kl_no_sqrt(sample_p, log_p, log_q, n):
    x = sample_p(n)
    d = log_p(x) - log_q(x)
    return float(d.mean()), float(d.std())


def kl_estimate_only(sample_p, log_p, log_q, n):
    x = sample_p(n)
    return float((log_p(x) - log_q(x)).mean())


def _mc(sample, log_a, log_b, n):
    x = sample(n)
    d = (log_a(x) - log_b(x)).double()
    return float(d.mean()), float(d.std() / math.sqrt(n))


def between_samples_from_q(p, q, n):
    return _mc(lambda m: q.sample((m,)), p.log_prob, q.log_prob, n)


def between_reverse(p, q, n):
    return _mc(lambda m: q.sample((m,)), q.log_prob, p.log_prob, n)


def between_sign_swapped(p, q, n):
    return _mc(lambda m: p.sample((m,)), q.log_prob, p.log_prob, n)


def between_closed_form(p, q, n):
    return float(torch.distributions.kl_divergence(p, q)), 0.0


WRONG = [
    # (checker, wrong implementation, the first case that must fail, text the report must contain)
    ("categorical_mle", mle_no_smoothing, "tiny: 4 images of 2 pixels, 3 levels, alpha=1", "no Laplace smoothing"),
    ("categorical_mle", mle_normalised_over_pixels, "tiny: 4 images of 2 pixels, 3 levels, alpha=1", "normalising over pixels"),
    ("categorical_mle", mle_alpha_once, "tiny: 4 images of 2 pixels, 3 levels, alpha=1", "adding alpha once"),
    ("categorical_mle", mle_levels_from_data, "shape (37, 2, 3, 4), 6 levels, top 2 never seen, alpha=0.37", "not the largest level seen"),
    ("categorical_mle", mle_transposed, "tiny: 4 images of 2 pixels, 3 levels, alpha=1", "transposed"),
    ("categorical_mle", mle_epsilon_instead_of_zero, "tiny without smoothing (alpha=0)", "values differ"),
    ("nll_nats", nll_mean_over_pixels, "tiny: 2 pixels, 3 levels, 2 images", "averaging over pixels instead of summing"),
    ("nll_nats", nll_log2, "tiny: 2 pixels, 3 levels, 2 images", "log base 2"),
    ("nll_nats", nll_sum_over_images, "tiny: 2 pixels, 3 levels, 2 images", "summing over images"),
    ("nll_nats", nll_wrong_sign, "tiny: 2 pixels, 3 levels, 2 images", "NEGATIVE log-likelihood"),
    ("nll_nats", nll_one_hot_mask, "a level with probability 0 occurs -> NLL = inf", "0 * -inf = NaN"),
    ("nll_nats", nll_clamped, "a level with probability 0 occurs -> NLL = inf", "do not add an epsilon"),
    ("kl_monte_carlo", kl_sign_swapped, "N(0,1) vs N(1,1), n=20000", "the sign swapped"),
    ("kl_monte_carlo", kl_ratio, "N(0,1) vs N(1,1), n=20000", "ratio p/q instead of its log"),
    ("kl_monte_carlo", kl_no_sqrt, "N(0,1) vs N(1,1), n=20000", "standard deviation instead of the standard error"),
    ("kl_monte_carlo", kl_estimate_only, "N(0,1) vs N(1,1), n=20000", "expected a pair (estimate, standard_error)"),
    ("kl_between", between_samples_from_q, "p = N(0,1), q = N(0,3^2), n=20000", "samples drawn from q instead of p"),
    ("kl_between", between_reverse, "p = N(0,1), q = N(0,3^2), n=20000", "the reverse KL(q||p)"),
    ("kl_between", between_sign_swapped, "p = N(0,1), q = N(0,3^2), n=20000", "the sign swapped"),
    ("kl_between", between_closed_form, "p = N(0,1), q = N(0,3^2), n=20000", "the closed form instead of a Monte Carlo"),
]


def _check_source_output(text):
    assert "test NLL = 106.37 nats per image" in text


SPEC = Assignment(
    number="01", checkers=CHECKERS, wrong=WRONG, stubs=4, quick=False,
    strict_example=("categorical_mle", mle_no_smoothing, "no Laplace smoothing"),
    source_check=_check_source_output, student_expect=("Finish exercises 1 and 2 first",),
)
