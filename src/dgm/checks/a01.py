"""Checkers for assignment 1: maximum likelihood for independent pixels, and Monte Carlo KL.

The learner writes four functions; each checker compares them with the
package's own implementations on shown and hidden cases:

* ``categorical_mle(x, num_levels, alpha) -> probs (D, num_levels)``, against
  :meth:`dgm.baselines.IndependentPixels.initialize`;
* ``nll_nats(probs, x) -> float``, the mean NLL in nats per image, against
  :meth:`dgm.baselines.IndependentPixels.log_prob`;
* ``kl_monte_carlo(sample_p, log_p, log_q, n) -> (estimate, standard_error)``,
  against the closed-form KL of :func:`torch.distributions.kl_divergence` with
  a statistical tolerance set by :func:`dgm.metrics.kl_monte_carlo`;
* ``kl_between(p, q, n) -> (estimate, standard_error)`` for two
  ``torch.distributions`` objects, the same way.

Each checker returns a :class:`~dgm.checks.CheckResult`; with
``DGM_CHECKS_STRICT=1`` a failure raises ``AssertionError`` instead.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import distributions as D
from torch.nn import functional as F

from . import Case, CheckResult, Mistake, as_dtype, finish, probe_case, randomness_problem, run_checks, summarize_value

__all__ = ["check_categorical_mle", "check_nll_nats", "check_kl_monte_carlo", "check_kl_between"]

#: how many standard errors a Monte Carlo answer may sit from the true KL
MC_TOLERANCE_SE = 4.5


# ---------------------------------------------------------------------------
# references: the package's own implementations
# ---------------------------------------------------------------------------
def _reference_mle(x: torch.Tensor, num_levels: int, alpha: float) -> torch.Tensor:
    from dgm.baselines import IndependentPixels

    model = IndependentPixels(tuple(x.shape[1:]), num_levels, alpha=alpha).double()
    model.initialize(x)
    return model.logits.detach().exp()


def _reference_nll(probs: torch.Tensor, x: torch.Tensor) -> float:
    from dgm.baselines import IndependentPixels

    model = IndependentPixels(tuple(x.shape[1:]), probs.shape[1], alpha=0.0).double()
    with torch.no_grad():
        model.logits.copy_(probs.double().log())
        return float(-model.log_prob(x).mean())


def _counts(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    return F.one_hot(x.reshape(len(x), -1).long(), num_levels).sum(0).double()


# ---------------------------------------------------------------------------
# 1. categorical_mle
# ---------------------------------------------------------------------------
def _digits(split: str, n: int) -> torch.Tensor:
    from dgm import data

    return data.load("digits", split).x[:n]


def _random_images(seed: int, shape: tuple[int, ...], num_levels: int, top_unused: int = 0) -> torch.Tensor:
    """Integer images whose top ``top_unused`` levels never occur."""
    gen = torch.Generator().manual_seed(seed)
    # uneven level frequencies, different for every pixel
    d = math.prod(shape[1:])
    used = num_levels - top_unused
    logits = 2.0 * torch.randn(d, used, generator=gen, dtype=torch.float64)
    draws = torch.multinomial(logits.softmax(-1), shape[0], replacement=True, generator=gen)  # (D, N)
    return draws.T.reshape(shape).long()


_MLE_MISTAKES = (
    Mistake("no Laplace smoothing", lambda x, k, a: _counts(x, k) / len(x),
            "alpha is missing: add alpha to every count (numerator) and num_levels * alpha to the total "
            "(denominator); otherwise unseen levels get probability 0 and a test NLL of inf."),
    Mistake("normalising over pixels instead of levels",
            lambda x, k, a: (_counts(x, k) + a) / (_counts(x, k) + a).sum(0, keepdim=True),
            "each ROW (one pixel, all its levels) must sum to one: sum over the last axis (dim=-1), not dim=0."),
    Mistake("adding alpha once in the denominator", lambda x, k, a: (_counts(x, k) + a) / (len(x) + a),
            "every level gets alpha added, so the total grows by num_levels * alpha: divide by N + num_levels * alpha."),
    Mistake("adding alpha only in the numerator", lambda x, k, a: (_counts(x, k) + a) / len(x),
            "the denominator must grow too (N + num_levels * alpha), or the rows no longer sum to one."),
)


def _validate_probs(got: Any, args: tuple) -> str | None:
    x, num_levels, _ = args
    d = math.prod(x.shape[1:])
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor of shape ({d}, {num_levels}), got {summarize_value(got)}"
    if tuple(got.shape) != (d, num_levels):
        extra = ""
        if tuple(got.shape) == (num_levels, d):
            extra = " (transposed: pixels go in rows, levels in columns)"
        elif got.ndim == 2 and got.shape[0] == d:
            extra = " (use num_levels for the number of columns, not the largest level seen in x)"
        elif got.ndim != 2:
            extra = " (flatten each image to D = prod(x.shape[1:]) pixels)"
        return f"wrong shape: expected (D, num_levels) = ({d}, {num_levels}), got {tuple(got.shape)}{extra}"
    if not got.is_floating_point():
        return f"wrong dtype: probabilities must be floating point, got {got.dtype}"
    g = got.detach().double()
    if not torch.isfinite(g).all():
        return "contains NaN or inf (0 / 0 somewhere?)"
    if (g < 0).any():
        return f"negative probabilities (smallest {float(g.min()):.3g})"
    sums = g.sum(-1)
    bad = (sums - 1).abs() > 1e-4
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        return f"rows must sum to one, but row {i} (pixel {i}) sums to {float(sums[i]):.6g}"
    return None


def categorical_mle_cases() -> list[Case]:
    tiny = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 2]])
    return [
        Case("tiny: 4 images of 2 pixels, 3 levels, alpha=1", (tiny, 3, 1.0),
             expected=torch.tensor([[4 / 7, 2 / 7, 1 / 7], [1 / 7, 2 / 7, 4 / 7]], dtype=torch.float64),
             hint="pixel 0 saw level 0 three times in 4 images: (3 + 1) / (4 + 3 * 1) = 4/7."),
        Case("tiny without smoothing (alpha=0)", (tiny, 3, 0.0),
             expected=torch.tensor([[3 / 4, 1 / 4, 0.0], [0.0, 1 / 4, 3 / 4]], dtype=torch.float64),
             hint="with alpha=0 the answer is the plain frequency count / N, with exact zeros for unseen levels."),
        Case("100 digits (1, 8, 8), 17 levels, alpha=0.5", lambda: (_digits("train", 100), 17, 0.5),
             reference=_reference_mle, inputs="x = first 100 training digits, shape (100, 1, 8, 8); num_levels=17; alpha=0.5",
             hint="flatten each image to 64 pixels; count each of the 17 levels per pixel."),
        Case("shape (37, 2, 3, 4), 6 levels, top 2 never seen, alpha=0.37",
             lambda: (_random_images(11, (37, 2, 3, 4), 6, top_unused=2), 6, 0.37),
             reference=_reference_mle, hidden=True,
             hint="use num_levels, not the largest value seen in x; unseen levels still get alpha / (N + K alpha)."),
        Case("shape (250, 5), 2 levels (binary), alpha=2.0",
             lambda: (_random_images(12, (250, 5), 2), 2, 2.0), reference=_reference_mle, hidden=True),
        Case("one image of shape (1, 4, 4), 9 levels, alpha=0.1",
             lambda: (_random_images(13, (1, 1, 4, 4), 9), 9, 0.1), reference=_reference_mle, hidden=True),
        Case("shape (60, 1, 5, 5), 11 levels, alpha=0 (unseen levels get 0)",
             lambda: (_random_images(14, (60, 1, 5, 5), 11, top_unused=3), 11, 0.0), reference=_reference_mle,
             hidden=True, hint="with alpha=0 an unseen level has probability exactly 0 (no epsilon)."),
    ]


def check_categorical_mle(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``categorical_mle(x, num_levels, alpha) -> probs`` of shape ``(D, num_levels)``."""
    cases = categorical_mle_cases()
    for case in cases:
        case.mistakes = _MLE_MISTAKES
    result = run_checks(fn, cases, title="categorical_mle", arg_names=("x", "num_levels", "alpha"),
                        validate=_validate_probs, atol=1e-9, rtol=1e-4)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 2. nll_nats
# ---------------------------------------------------------------------------
def _random_probs(seed: int, d: int, k: int, zero_at: tuple[int, int] | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(d, k, generator=gen, dtype=torch.float64) + 0.05
    if zero_at is not None:
        p[zero_at] = 0.0
    return p / p.sum(-1, keepdim=True)


def _nll_zero_case() -> tuple:
    probs = _random_probs(22, 6, 4, zero_at=(2, 3))
    x = _random_images(23, (9, 2, 3), 4)
    x[4].view(-1)[2] = 3  # image 4 shows level 3 at pixel 2, which has probability 0
    return probs, x


def _digits_nll_case() -> tuple:
    return _reference_mle(_digits("train", 200), 17, 0.5), _digits("val", 50)


_NLL_MISTAKES = (
    Mistake("averaging over pixels instead of summing", lambda p, x: _reference_nll(p, x) / math.prod(x.shape[1:]),
            "the NLL of one image is the SUM of -log p over its pixels (independent pixels multiply); "
            "only the images are averaged."),
    Mistake("log base 2 instead of the natural log", lambda p, x: _reference_nll(p, x) / math.log(2),
            "nats use the natural log: torch.log, not torch.log2 (bits = nats / ln 2)."),
    Mistake("summing over images instead of averaging", lambda p, x: _reference_nll(p, x) * len(x),
            "return the MEAN over images of the per-image NLL."),
    Mistake("the log-likelihood instead of the NEGATIVE log-likelihood", lambda p, x: -_reference_nll(p, x),
            "an NLL is -log p, a positive number for discrete data."),
)


def nll_nats_cases() -> list[Case]:
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=torch.float64)
    x = torch.tensor([[0, 2], [1, 2]])
    tiny_expected = -(math.log(0.5) + math.log(0.8) + math.log(0.25) + math.log(0.8)) / 2
    return [
        Case("tiny: 2 pixels, 3 levels, 2 images", (probs, x), expected=tiny_expected,
             hint="image 0 has NLL -log 0.5 - log 0.8; image 1 has -log 0.25 - log 0.8; return their mean."),
        Case("50 validation digits under a model of 200 training digits", _digits_nll_case, reference=_reference_nll,
             inputs="probs = MLE of 200 training digits (alpha=0.5), shape (64, 17); x = 50 validation digits (50, 1, 8, 8)",
             hint="flatten each image to 64 pixel levels and pick probs[pixel, level] for every pixel."),
        Case("15 pixels in shape (3, 5), 7 levels, 23 images",
             lambda: (_random_probs(20, 15, 7), _random_images(21, (23, 3, 5), 7)), reference=_reference_nll,
             hidden=True),
        Case("a level with probability 0 occurs -> NLL = inf", _nll_zero_case, reference=_reference_nll,
             hidden=True,
             hint="an observed value with probability 0 has -log 0 = inf, so the NLL is inf, not NaN or a big finite "
                  "number: pick the observed probabilities by indexing (gather) instead of multiplying log-probs by "
                  "a one-hot mask (0 * -inf = NaN), and do not add an epsilon; alpha in categorical_mle is the fix."),
        Case("one binary image of 12 pixels", lambda: (_random_probs(24, 12, 2), _random_images(25, (1, 12), 2)),
             reference=_reference_nll, hidden=True),
    ]


def check_nll_nats(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``nll_nats(probs, x) -> float``: mean over images of the summed per-pixel NLL, in nats."""
    cases = nll_nats_cases()
    for case in cases:
        case.mistakes = _NLL_MISTAKES
    cases += [as_dtype(c, torch.float32, only=(0,)) for c in cases[1:4]]
    result = run_checks(fn, cases, title="nll_nats", arg_names=("probs", "x"), atol=1e-6, rtol=1e-5)
    return finish(result, strict)


# ---------------------------------------------------------------------------
# 3. kl_monte_carlo and 4. kl_between (statistical checks)
# ---------------------------------------------------------------------------
def _pair(got: Any) -> tuple[float, float] | str:
    """``(estimate, standard_error)`` as floats, or a message saying what is wrong."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return ("expected a pair (estimate, standard_error), got " + summarize_value(got))
    out = []
    for name, value in zip(("estimate", "standard_error"), got):
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                return (f"{name} should be one number, got a tensor of shape {tuple(value.shape)} "
                        "(did you forget to average over the samples?)")
            value = float(value.detach().reshape(()))
        try:
            value = float(value)
        except (TypeError, ValueError):
            return f"{name} should be a number, got {summarize_value(value)}"
        if math.isnan(value) or math.isinf(value):
            return f"{name} is {value}"
        out.append(value)
    return out[0], out[1]


def _mc_judge(true_kl: float, se_ref: float, n: int) -> Callable[[Any, tuple], str | None]:
    """Accept an estimate within MC_TOLERANCE_SE standard errors of the true KL and a sensible standard error."""

    def judge(got: Any, args: tuple) -> str | None:
        pair = _pair(got)
        if isinstance(pair, str):
            return pair
        est, se = pair
        slack = MC_TOLERANCE_SE * se_ref + 1e-6 * max(1.0, abs(true_kl))
        if abs(est - true_kl) > slack:
            return (f"estimate {est:.5g} is {abs(est - true_kl) / max(se_ref, 1e-12):.1f} standard errors from the true "
                    f"KL {true_kl:.5g} (allowed: {MC_TOLERANCE_SE} standard errors = {slack:.3g})")
        if se_ref < 1e-9:
            if abs(se) > 1e-6:
                return f"p = q here, so every log-ratio is 0 and the standard error is 0; got {se:.3g}"
            return None
        low, high = (0.5, 2.0) if n < 50 else (0.8, 1.25)
        if not (low * se_ref <= se <= high * se_ref):
            return (f"standard error {se:.4g} should be about {se_ref:.4g}: the sample standard deviation "
                    f"of log p(x) - log q(x) divided by sqrt(n) (here sqrt({n}) = {math.sqrt(n):.4g})")
        return None

    return judge


def _normal(loc, scale) -> D.Distribution:
    loc, scale = torch.as_tensor(loc, dtype=torch.float64), torch.as_tensor(scale, dtype=torch.float64)
    return D.Normal(loc, scale) if loc.ndim == 0 else D.Independent(D.Normal(loc, scale), 1)


def _hidden_pairs() -> list[tuple[str, D.Distribution, D.Distribution, int, int]]:
    """(name, p, q, n, seed) for the hidden cases, built from a fixed generator."""
    gen = torch.Generator().manual_seed(2024)
    d = 5
    p5 = _normal(torch.randn(d, generator=gen, dtype=torch.float64), 0.5 + torch.rand(d, generator=gen, dtype=torch.float64))
    q5 = _normal(torch.randn(d, generator=gen, dtype=torch.float64), 0.5 + torch.rand(d, generator=gen, dtype=torch.float64))
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    pm = D.MultivariateNormal(torch.zeros(3, dtype=torch.float64), a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64))
    qm = D.MultivariateNormal(torch.ones(3, dtype=torch.float64), b @ b.T + 1.0 * torch.eye(3, dtype=torch.float64))
    pc = D.Categorical(probs=torch.tensor([0.7, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64))
    qc = D.Categorical(probs=torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64))
    same = _normal(0.3, 1.7)
    return [
        ("5-d diagonal Gaussians, n=20000", p5, q5, 20_000, 31),
        ("3-d full-covariance Gaussians, n=20000", pm, qm, 20_000, 32),
        ("categorical over 5 values, n=20000", pc, qc, 20_000, 33),
        ("p = q (the KL is exactly 0), n=1000", same, _normal(0.3, 1.7), 1000, 34),
        ("few samples, n=10", _normal(0.0, 1.0), _normal(2.0, 1.0), 10, 35),
    ]


def _reference_se(p: D.Distribution, q: D.Distribution, n: int, seed: int) -> float:
    from dgm.metrics import kl_monte_carlo

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return kl_monte_carlo(lambda m: p.sample((m,)), p.log_prob, q.log_prob, n)[1]


def _kl_case(name: str, p, q, n: int, seed: int, hidden: bool, style: str, hint: str = "") -> Case:
    true_kl = float(D.kl_divergence(p, q))
    se_ref = _reference_se(p, q, n, seed)
    desc = f"p = {_describe(p)}, q = {_describe(q)}, n={n}; true KL(p||q) = {true_kl:.5g}"
    if style == "functions":
        args = (lambda m: p.sample((m,)), p.log_prob, q.log_prob, n)
        desc = "sample_p, log_p, log_q of " + desc
    else:
        args = (p, q, n)
    return Case(name, args, judge=_mc_judge(true_kl, se_ref, n), hint=hint, hidden=hidden, seed=seed, inputs=desc)


def _describe(dist: D.Distribution) -> str:
    if isinstance(dist, D.Normal):
        return f"N({float(dist.loc):.3g}, {float(dist.scale):.3g}^2)"
    if isinstance(dist, D.Independent):
        return f"{dist.event_shape[0]}-d diagonal Gaussian"
    if isinstance(dist, D.MultivariateNormal):
        return f"{dist.event_shape[0]}-d Gaussian"
    if isinstance(dist, D.Categorical):
        return "Categorical(" + ", ".join(f"{v:.2g}" for v in dist.probs.tolist()) + ")"
    return type(dist).__name__


def _mc_mistakes(style: str) -> tuple[Mistake, ...]:
    def fns(p, q):
        return (lambda m: p.sample((m,))), p.log_prob, q.log_prob

    def unpack(args):
        if style == "functions":
            return args
        p, q, n = args
        return (*fns(p, q), n)

    def with_se(diff: torch.Tensor) -> tuple[float, float]:
        return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))

    def swapped_sign(*args):
        sample_p, log_p, log_q, n = unpack(args)
        x = sample_p(n)
        return with_se(log_q(x) - log_p(x))

    def ratio(*args):
        sample_p, log_p, log_q, n = unpack(args)
        x = sample_p(n)
        return with_se((log_p(x) - log_q(x)).exp())

    def no_sqrt(*args):
        sample_p, log_p, log_q, n = unpack(args)
        x = sample_p(n)
        diff = log_p(x) - log_q(x)
        return float(diff.mean()), float(diff.std())

    mistakes = [
        Mistake("the sign swapped (log q - log p)", swapped_sign,
                "KL(p||q) = E_p[log p(x) - log q(x)]: log p first. A KL is never negative."),
        Mistake("averaging the ratio p/q instead of its log", ratio,
                "average the LOG-ratio log p(x) - log q(x), not p(x)/q(x) (E_p[p/q] is a different quantity)."),
        Mistake("the standard deviation instead of the standard error", no_sqrt,
                "the standard error of a mean of n samples is std / sqrt(n)."),
    ]
    if style == "distributions":
        def from_q(p, q, n):
            x = q.sample((n,))
            return with_se(p.log_prob(x) - q.log_prob(x))

        def reverse(p, q, n):
            x = q.sample((n,))
            return with_se(q.log_prob(x) - p.log_prob(x))

        def closed_form(p, q, n):
            return float(D.kl_divergence(p, q)), 0.0

        mistakes += [
            Mistake("the closed form instead of a Monte Carlo estimate", closed_form,
                    "this exercise is about the Monte Carlo estimate: sample from p and return the mean of "
                    "log p - log q with its standard error (use your kl_monte_carlo)."),
            Mistake("samples drawn from q instead of p", from_q,
                    "KL(p||q) is an expectation under p: draw x from p (p.sample), then average log p(x) - log q(x)."),
            Mistake("the reverse KL(q||p)", reverse,
                    "you computed KL(q||p): sample from p and average log p - log q. The KL is not symmetric."),
        ]
    return tuple(mistakes)


def kl_monte_carlo_cases() -> list[Case]:
    hint = "draw x = sample_p(n) once, then d = log_p(x) - log_q(x); return (d.mean(), d.std() / sqrt(n))."
    cases = [
        _kl_case("N(0,1) vs N(1,1), n=20000", _normal(0.0, 1.0), _normal(1.0, 1.0), 20_000, 1, False, "functions", hint),
        _kl_case("N(0,1) vs N(0,3^2), n=20000", _normal(0.0, 1.0), _normal(0.0, 3.0), 20_000, 2, False, "functions", hint),
    ]
    cases += [_kl_case(name, p, q, n, seed, True, "functions", hint) for name, p, q, n, seed in _hidden_pairs()]
    return cases


def kl_between_cases() -> list[Case]:
    hint = "KL(p||q) = E_{x ~ p}[log p(x) - log q(x)]: sample from p, evaluate both log-densities there."
    cases = [
        _kl_case("p = N(0,1), q = N(0,3^2), n=20000", _normal(0.0, 1.0), _normal(0.0, 3.0), 20_000, 3, False,
                 "distributions", hint),
        _kl_case("p = N(0,3^2), q = N(1,1), n=20000", _normal(0.0, 3.0), _normal(1.0, 1.0), 20_000, 4, False,
                 "distributions", hint),
    ]
    cases += [_kl_case(name, p, q, n, seed, True, "distributions", hint) for name, p, q, n, seed in _hidden_pairs()]
    return cases


def check_kl_monte_carlo(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``kl_monte_carlo(sample_p, log_p, log_q, n) -> (estimate, standard_error)``."""
    cases = kl_monte_carlo_cases()
    for case in cases:
        case.mistakes = _mc_mistakes("functions")
    p, q = _normal(0.0, 1.0), _normal(1.0, 2.0)
    cases.append(probe_case("hidden: every call draws fresh samples from torch's generator", lambda f: randomness_problem(
        lambda: f(lambda m: p.sample((m,)), p.log_prob, q.log_prob, 200), what="estimate")))
    result = run_checks(fn, cases, title="kl_monte_carlo", atol=1e-9, rtol=1e-6)
    return finish(result, strict)


def check_kl_between(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``kl_between(p, q, n) -> (estimate, standard_error)`` for two ``torch.distributions``."""
    cases = kl_between_cases()
    for case in cases:
        case.mistakes = _mc_mistakes("distributions")
    p, q = _normal(0.0, 1.0), _normal(1.0, 2.0)
    cases.append(probe_case("hidden: every call draws fresh samples from torch's generator",
                            lambda f: randomness_problem(lambda: f(p, q, 200), what="estimate")))
    result = run_checks(fn, cases, title="kl_between", atol=1e-9, rtol=1e-6)
    return finish(result, strict)
