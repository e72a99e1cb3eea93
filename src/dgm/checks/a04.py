"""Checkers for assignment 4: the GAN losses, one alternating training step, mode coverage.

* ``discriminator_loss(real_logits, fake_logits) -> scalar``: binary
  cross-entropy with real = 1 and fake = 0, on logits, averaged over each
  batch. Compared with :func:`dgm.gan.discriminator_loss` on visible and
  hidden logits (sizes differ between the two batches, and extreme logits
  where a naive ``log(sigmoid(.))`` overflows).
* ``generator_loss(fake_logits) -> scalar``: the non-saturating loss
  ``-E log D(G(z))``; compared with :func:`dgm.gan.generator_loss`.
* ``gan_step(generator, discriminator, real, z, opt_d, opt_g) -> (d_loss, g_loss)``:
  one discriminator update, then one generator update. Judged by what it
  does to the parameters: run on copies of small networks, the parameters
  after the step must equal those of the reference step (so G must get a
  gradient, D must not be moved by G's loss, and the order must be D then G).
* ``mode_coverage(samples, modes, std) -> (modes_captured, high_quality_frac)``:
  the VEEGAN/PacGAN protocol; compared with :func:`dgm.metrics.mode_coverage`
  on constructed sample sets whose answer changes with each known mistake.

Each checker returns a :class:`~dgm.checks.CheckResult`; with
``DGM_CHECKS_STRICT=1`` a failure raises ``AssertionError`` instead.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import Case, CheckResult, Mistake, as_dtype, finish, probe_case, run_checks, scalar_loss_problem, summarize_value

__all__ = ["check_discriminator_loss", "check_generator_loss", "check_gan_step", "check_mode_coverage",
           "small_gan", "reference_gan_step"]


# ---------------------------------------------------------------------------
# 1. the discriminator's loss
# ---------------------------------------------------------------------------
def _reference_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    from dgm.gan import discriminator_loss

    return discriminator_loss(real_logits, fake_logits)


_D_MISTAKES = (
    Mistake("labels swapped (real = 0, fake = 1)",
            lambda r, f: F.softplus(r).mean() + F.softplus(-f).mean(),
            "the discriminator says 'real' with a large logit: real examples get label 1 (loss -log sigmoid(l) = "
            "softplus(-l)), fakes get label 0 (loss -log(1 - sigmoid(l)) = softplus(l))."),
    Mistake("the classification error instead of the log loss",
            lambda r, f: 0.5 * (1 - torch.sigmoid(r)).mean() + 0.5 * torch.sigmoid(f).mean(),
            "that is the classification-error game; here the loss is the binary cross-entropy -E log D(x) - E log(1 - D(G(z)))."),
    Mistake("one mean over the concatenated batch",
            lambda r, f: torch.cat([F.softplus(-r), F.softplus(f)]).mean(),
            "average each batch on its own and add the two means: -E_data log D(x) - E_z log(1 - D(G(z)))."),
    Mistake("sums instead of means",
            lambda r, f: F.softplus(-r).sum() + F.softplus(f).sum(),
            "use the mean over each batch (an expectation), not the sum: the loss must not grow with the batch size."),
    Mistake("the value V(D, G) instead of a loss to minimise",
            lambda r, f: -(F.softplus(-r).mean() + F.softplus(f).mean()),
            "D maximises V = E log D(x) + E log(1 - D(G(z))); the optimizer minimises, so return -V."),
)


def _logits(seed: int, n_real: int, n_fake: int, scale: float = 2.0) -> Callable[[], tuple]:
    def build():
        gen = torch.Generator().manual_seed(seed)
        return (scale * torch.randn(n_real, generator=gen) + 1, scale * torch.randn(n_fake, generator=gen) - 1)
    return build


def discriminator_loss_cases() -> list[Case]:
    hint = "loss = mean(softplus(-real_logits)) + mean(softplus(fake_logits)), i.e. -E log D(x) - E log(1 - D(G(z)))."
    return [
        Case("D unsure everywhere: all logits 0 (answer 2 log 2 = 1.3863)",
             (torch.zeros(4), torch.zeros(4)), reference=_reference_d_loss, hint=hint),
        Case("real logits [2, 3], fake logits [-1, 0, 1]",
             (torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.0, 1.0])), reference=_reference_d_loss, hint=hint),
        Case("hidden: 16 real and 48 fake random logits", _logits(41, 16, 48), reference=_reference_d_loss,
             hint=hint, hidden=True),
        Case("hidden: 100 real and 7 fake random logits", _logits(42, 100, 7, 4.0), reference=_reference_d_loss,
             hint=hint, hidden=True),
        Case("hidden: extreme logits +-200 (log(sigmoid) would give -inf)",
             (torch.tensor([200.0, -200.0]), torch.tensor([-200.0, 200.0, 0.0])), reference=_reference_d_loss,
             hint="compute the log-probabilities from the logits with softplus (or F.logsigmoid), "
                  "not log(torch.sigmoid(l)), which underflows to log(0) for large |l|.", hidden=True),
    ]


def check_discriminator_loss(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``discriminator_loss(real_logits, fake_logits) -> scalar tensor``."""
    cases = discriminator_loss_cases()
    for case in cases:
        case.mistakes = _D_MISTAKES
    cases += [as_dtype(c, torch.float64) for c in cases[2:]]
    result = run_checks(fn, cases, title="discriminator_loss", arg_names=("real_logits", "fake_logits"),
                        validate=_scalar_problem, grad_args=(0, 1))
    return finish(result, strict)


def _scalar_problem(got: Any, args: tuple) -> str | None:
    return scalar_loss_problem(got, finite=True)


# ---------------------------------------------------------------------------
# 2. the non-saturating generator loss
# ---------------------------------------------------------------------------
def _reference_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    from dgm.gan import generator_loss

    return generator_loss(fake_logits, "nonsaturating")


_G_MISTAKES = (
    Mistake("the saturating loss E log(1 - D(G(z)))",
            lambda f: -F.softplus(f).mean(),
            "that is the saturating (minimax) form: its gradient vanishes when D confidently rejects the fakes. "
            "The non-saturating loss is -E log D(G(z)) = mean(softplus(-fake_logits))."),
    Mistake("labels swapped (fakes labelled 0, as in D's loss)",
            lambda f: F.softplus(f).mean(),
            "G wants D to call its fakes REAL: use label 1, i.e. -log D(G(z)) = softplus(-l), not -log(1 - D(G(z)))."),
    Mistake("probabilities instead of log-probabilities",
            lambda f: -torch.sigmoid(f).mean(),
            "take the log: -E log D(G(z)), computed stably as mean(softplus(-fake_logits))."),
    Mistake("the sum instead of the mean",
            lambda f: F.softplus(-f).sum(),
            "average over the batch (an expectation), do not sum."),
)


def generator_loss_cases() -> list[Case]:
    hint = "non-saturating: loss = -E log D(G(z)) = mean(softplus(-fake_logits))."
    return [
        Case("D unsure: logits 0 (answer log 2 = 0.6931)", (torch.zeros(5),), reference=_reference_g_loss, hint=hint),
        Case("logits [-3, 0, 2]", (torch.tensor([-3.0, 0.0, 2.0]),), reference=_reference_g_loss, hint=hint),
        Case("hidden: D confidently rejects the fakes, logits around -8",
             lambda: (torch.randn(32, generator=torch.Generator().manual_seed(43)) - 8,),
             reference=_reference_g_loss, hint=hint, hidden=True),
        Case("hidden: 50 random logits", lambda: (3 * torch.randn(50, generator=torch.Generator().manual_seed(44)),),
             reference=_reference_g_loss, hint=hint, hidden=True),
        Case("hidden: extreme logits +-300", (torch.tensor([-300.0, 300.0]),), reference=_reference_g_loss,
             hint="use softplus (or F.logsigmoid) on the logits: log(sigmoid(-300)) is log(0) = -inf.", hidden=True),
    ]


def check_generator_loss(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``generator_loss(fake_logits) -> scalar tensor`` (the non-saturating loss)."""
    cases = generator_loss_cases()
    for case in cases:
        case.mistakes = _G_MISTAKES
    cases += [as_dtype(c, torch.float64) for c in cases[2:]]
    result = run_checks(fn, cases, title="generator_loss", arg_names=("fake_logits",),
                        validate=_scalar_problem, grad_args=(0,))
    return finish(result, strict)


def saturation_report(fn: Callable) -> str:
    """A sentence comparing the learner's loss's gradient with the saturating one's at D(G(z)) ~ 0."""
    logits = torch.full((8,), -8.0, requires_grad=True)
    fn(logits).backward()
    yours = float(logits.grad.abs().sum())
    sat = torch.full((8,), -8.0, requires_grad=True)
    (-F.softplus(sat).mean()).backward()
    return (f"|d loss / d logits| where D rejects the fakes (logit -8): yours {yours:.4f}, "
            f"saturating {float(sat.grad.abs().sum()):.6f}")


# ---------------------------------------------------------------------------
# 3. one alternating step
# ---------------------------------------------------------------------------
def small_gan(seed: int, latent_dim: int = 3, dim: int = 2, hidden: int = 8) -> tuple[nn.Module, nn.Module]:
    """A tiny generator and discriminator (D returns logits ``(B,)``), seeded."""
    gen = torch.Generator().manual_seed(seed)
    generator = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
    discriminator = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Flatten(0))
    with torch.no_grad():
        for p in list(generator.parameters()) + list(discriminator.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
    return generator, discriminator


def reference_gan_step(generator, discriminator, real, z, opt_d, opt_g):
    """One D update on (real, G(z)), then one G update with the non-saturating loss."""
    from dgm.gan import discriminator_loss, generator_loss

    fake = generator(z)
    d_loss = discriminator_loss(discriminator(real), discriminator(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = generator_loss(discriminator(fake), "nonsaturating")
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss, g_loss


def _run_step(step_fn: Callable, seed: int, batch: int, latent_dim: int, lr: float) -> dict[str, Any]:
    """Run ``step_fn`` on fresh seeded networks; return their parameters after the step."""
    with torch.random.fork_rng(devices=[]):  # layer construction draws from the global generator
        return _run_step_unforked(step_fn, seed, batch, latent_dim, lr)


def _run_step_unforked(step_fn: Callable, seed: int, batch: int, latent_dim: int, lr: float) -> dict[str, Any]:
    generator, discriminator = small_gan(seed, latent_dim)
    gen = torch.Generator().manual_seed(seed + 1)
    real = torch.randn(batch, 2, generator=gen) + 2
    z = torch.randn(batch, latent_dim, generator=gen)
    before_g = [p.detach().clone() for p in generator.parameters()]
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=lr)
    opt_g = torch.optim.SGD(generator.parameters(), lr=lr)
    out = step_fn(generator, discriminator, real, z, opt_d, opt_g)
    return {"out": out, "g": [p.detach().clone() for p in generator.parameters()],
            "d": [p.detach().clone() for p in discriminator.parameters()], "g_before": before_g}


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _step_judge(got: Any, args: tuple) -> str | None:
    seed, batch, latent_dim, lr, learner_fn = args
    ref = _run_step(reference_gan_step, seed, batch, latent_dim, lr)
    yours = got
    if not (isinstance(yours["out"], (tuple, list)) and len(yours["out"]) == 2):
        return f"return the pair (d_loss, g_loss), got {summarize_value(yours['out'])}"
    if _max_diff(yours["g"], yours["g_before"]) == 0:
        return ("the generator did not change: G got no gradient. Do not detach the fakes in the generator's "
                "update (detach them only where D is trained), and call opt_g.step()")
    d_ok = _max_diff(yours["d"], ref["d"]) < 1e-5
    g_ok = _max_diff(yours["g"], ref["g"]) < 1e-5
    if not d_ok:
        return ("the discriminator's parameters after the step differ from one SGD step on D's loss: update D first, "
                "on real and fake = G(z) (detached), with opt_d, and make sure G's loss does not also move D "
                "(call opt_d.zero_grad() before D's backward)")
    if not g_ok:
        return ("D's update is right, but G's parameters differ from one step on the non-saturating loss of the "
                "UPDATED discriminator: compute g_loss = generator_loss(D(G(z))) after D's step, call "
                "opt_g.zero_grad() before g_loss.backward() (else D's backward leaves gradients in G), then opt_g.step()")
    d_loss, g_loss = (float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in yours["out"])
    ref_d, ref_g = (float(v.detach()) for v in ref["out"])
    if abs(d_loss - ref_d) > 1e-5 or abs(g_loss - ref_g) > 1e-5:
        return (f"the parameters are right but the returned losses are ({d_loss:.5f}, {g_loss:.5f}), expected "
                f"({ref_d:.5f}, {ref_g:.5f})")
    return None


def check_gan_step(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``gan_step(generator, discriminator, real, z, opt_d, opt_g) -> (d_loss, g_loss)``."""
    settings = [("latent 3, batch 8", 51, 8, 3, 0.1, False), ("hidden: latent 5, batch 13", 52, 13, 5, 0.3, True),
                ("hidden: latent 1, batch 64", 53, 64, 1, 0.05, True)]
    cases = [Case(name, (seed, batch, latent, lr, fn), judge=_step_judge, hidden=hidden,
                  inputs=f"small MLPs (seed {seed}), real ~ N(2, 1) in 2-D, batch {batch}, latent {latent}, SGD lr {lr}")
             for name, seed, batch, latent, lr, hidden in settings]
    cases.append(probe_case("hidden: three steps in a row on the same networks, starting from stale gradients",
                            lambda _: _several_steps_problem(fn)))
    result = run_checks(lambda seed, batch, latent, lr, learner: _run_step(learner, seed, batch, latent, lr),
                        cases, title="gan_step")
    return finish(result, strict)


def _run_steps(step_fn: Callable, steps: int, seed: int = 54) -> list[list[torch.Tensor]]:
    """Parameters of G and D after each of ``steps`` calls, on networks whose .grad starts out stale (random)."""
    with torch.random.fork_rng(devices=[]):
        generator, discriminator = small_gan(seed, 2)
        gen = torch.Generator().manual_seed(seed + 1)
        for p in list(generator.parameters()) + list(discriminator.parameters()):
            p.grad = torch.randn(p.shape, generator=gen)  # left over from an earlier computation
        opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.1)
        opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
        after = []
        for _ in range(steps):
            real, z = torch.randn(16, 2, generator=gen) + 2, torch.randn(16, 2, generator=gen)
            step_fn(generator, discriminator, real, z, opt_d, opt_g)
            after.append([p.detach().clone() for p in list(generator.parameters()) + list(discriminator.parameters())])
    return after


def _several_steps_problem(step_fn: Callable) -> str | None:
    ref, yours = _run_steps(reference_gan_step, 3), _run_steps(step_fn, 3)
    for number, (r, y) in enumerate(zip(ref, yours), 1):
        if _max_diff(r, y) > 1e-5:
            return (f"step {number} of three, started with gradients left in .grad from before, moves the parameters "
                    "differently from the reference: call opt_d.zero_grad() before d_loss.backward() and "
                    "opt_g.zero_grad() before g_loss.backward() in every step (stale gradients add up otherwise)")
    return None


# ---------------------------------------------------------------------------
# 4. mode coverage
# ---------------------------------------------------------------------------
def _reference_coverage(samples: torch.Tensor, modes: torch.Tensor, std: float) -> tuple[int, float]:
    from dgm.metrics import mode_coverage

    result = mode_coverage(samples, modes, std)
    return result["modes_captured"], result["high_quality_frac"]


def _coverage_with(samples, modes, std, threshold, captured_from_all=False, squared=False):
    distance = torch.cdist(samples.double(), modes.double())
    if squared:
        distance = distance**2
    nearest_distance, nearest = distance.min(1)
    good = nearest_distance <= threshold
    captured = nearest.unique().numel() if captured_from_all else nearest[good].unique().numel()
    return int(captured), float(good.double().mean())


_COVERAGE_MISTAKES = (
    Mistake("distances not scaled by sigma (threshold 3 instead of 3 sigma)",
            lambda s, m, std: _coverage_with(s, m, std, 3.0),
            "a sample is high quality if its distance to the nearest mode is at most 3 * std: the threshold is "
            "in units of the modes' standard deviation."),
    Mistake("a mode counted as captured by any sample, not only high-quality ones",
            lambda s, m, std: _coverage_with(s, m, std, 3 * std, captured_from_all=True),
            "count a mode only if it is the nearest mode of at least one HIGH-QUALITY sample; far-away samples "
            "capture nothing."),
    Mistake("squared distance compared with 3 sigma",
            lambda s, m, std: _coverage_with(s, m, std, 3 * std, squared=True),
            "compare the distance itself (torch.cdist), not its square, with 3 * std."),
    Mistake("threshold sigma instead of 3 sigma",
            lambda s, m, std: _coverage_with(s, m, std, std),
            "the protocol allows 3 standard deviations: distance <= 3 * std."),
)


def _ring_modes(k: int, radius: float) -> torch.Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return radius * torch.stack([angles.cos(), angles.sin()], 1)


def _constructed_samples(seed: int, modes: torch.Tensor, std: float, use: int, near: int, mid: int,
                         far: int) -> torch.Tensor:
    """``near`` samples at 2 std around the first ``use`` modes, ``mid`` at 4-6 std, ``far`` between modes."""
    gen = torch.Generator().manual_seed(seed)
    def around(n, lo, hi):
        idx = torch.randint(use, (n,), generator=gen)
        direction = torch.randn(n, modes.shape[1], generator=gen, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True)
        radius = lo + (hi - lo) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
        return modes[idx] + std * radius * direction
    # far: midpoints of mode pairs not otherwise used, so they would "capture" extra modes when counted
    pairs = torch.randint(len(modes), (far, 2), generator=gen)
    far_points = 0.5 * (modes[pairs[:, 0]] + modes[pairs[:, 1]]) + 0.3 * torch.randn(far, modes.shape[1], generator=gen,
                                                                                       dtype=torch.float64)
    return torch.cat([around(near, 0.5, 2.5), around(mid, 4.0, 6.0), far_points]).float()


def mode_coverage_cases() -> list[Case]:
    ring = _ring_modes(8, 1.0)
    hint = "distance to the nearest mode (torch.cdist(...).min(1)); high quality if <= 3 * std; count the distinct nearest modes of the high-quality samples."
    def case(name, seed, modes, std, use, near, mid, far, hidden):
        return Case(name, lambda: (_constructed_samples(seed, modes, std, use, near, mid, far), modes.float(), std),
                    reference=_reference_coverage, hint=hint, hidden=hidden, atol=1e-6, rtol=0,
                    inputs=f"{near + mid + far} samples around {use} of {len(modes)} modes (std {std}): {near} within "
                           f"3 std, {mid} at 4-6 std, {far} far away")
    grid = torch.stack(torch.meshgrid(torch.arange(-4.0, 5, 2), torch.arange(-4.0, 5, 2), indexing="ij"), -1)
    grid = grid.reshape(-1, 2).double()
    return [
        Case("3 samples, 2 modes, std 0.1: answer (1, 2/3)",
             (torch.tensor([[0.0, 0.05], [0.0, 0.25], [2.0, 2.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]]), 0.1),
             expected=(1, 2 / 3), hint=hint),
        case("ring of 8 (std 0.01): samples on 5 modes, some blurred, some between", 61, ring, 0.01, 5, 300, 100, 50, False),
        case("hidden: grid of 25 (std 0.05), samples on 25 modes", 62, grid, 0.05, 25, 800, 200, 100, True),
        case("hidden: ring of 8 (std 0.5): wide modes, samples on 3", 63, _ring_modes(8, 10.0), 0.5, 3, 200, 100, 80, True),
        case("hidden: grid of 25 (std 0.05), only 1 mode captured", 64, grid, 0.05, 1, 50, 300, 400, True),
    ]


def _coverage_validate(got: Any, args: tuple) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"return a pair (modes_captured, high_quality_frac), got {summarize_value(got)}"
    captured, frac = got
    if isinstance(captured, torch.Tensor):
        captured = captured.item()
    if float(captured) != int(float(captured)):
        return f"modes_captured must be a whole number, got {captured}"
    frac = float(frac)
    if not 0 <= frac <= 1:
        return f"high_quality_frac is a fraction of the samples, in [0, 1]; got {frac}"
    return None


def check_mode_coverage(fn: Callable, strict: bool | None = None) -> CheckResult:
    """Check ``mode_coverage(samples, modes, std) -> (modes_captured, high_quality_frac)``."""
    cases = mode_coverage_cases()
    for case in cases:
        case.mistakes = _COVERAGE_MISTAKES
    result = run_checks(fn, cases, title="mode_coverage", arg_names=("samples", "modes", "std"),
                        validate=_coverage_validate)
    return finish(result, strict)
