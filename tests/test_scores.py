"""dgm.scores: Langevin samplers against known Gaussians, the analytic mixture score against autograd,
the denoising score-matching optimum, the EBM's quadrature normaliser and replay buffer, the NCSN."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dgm import data
from dgm import scores as sc


def gaussian_score(mean, var):
    """The score of N(mean, diag(var)): -(x - mean) / var."""
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    return lambda x: -(x - mean) / var


# ---- the analytic mixture score ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["ring", "ring-sharp", "grid-sharp", "moons"])
def test_mixture_score_is_the_gradient_of_the_toy_log_density(name):
    density = data.toy_density(name)
    jitter = 0.3 * torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = density.sample(300, seed=3).double() + jitter  # off the modes too
    x.requires_grad_(True)
    (expected,) = torch.autograd.grad(density.log_prob(x).sum(), x)
    got = sc.mixture_score(x.detach(), density.means, density.std)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


def test_mixture_score_with_weights_and_a_noise_level_per_point():
    means = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    sigma = torch.linspace(0.1, 2.0, 50, dtype=torch.float64)
    std = (0.4**2 + sigma**2).sqrt()  # the mixture noised at sigma: the same mixture, wider
    got = sc.mixture_score(x, means, std, weights)
    for i in (0, 17, 49):
        mixture = data.GaussianMixture2D("m", means, float(std[i]), weights)
        xi = x[i : i + 1].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(mixture.log_prob(xi).sum(), xi)
        assert torch.allclose(got[i], expected[0], rtol=1e-6, atol=1e-9)


# ---- Langevin ---------------------------------------------------------------------------------
def test_langevin_with_the_analytic_score_reaches_the_gaussians_mean_and_variance():
    mean, var = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(4000, 2, dtype=torch.float64, generator=gen) * 3
    # 2,000 steps: ten times the slowest relaxation time 2 var / eps
    out = sc.langevin(gaussian_score(mean, var), start, step_size=0.02, steps=2000, generator=gen)
    # 4,000 chains: the standard error of the mean is ~0.02, of the variance ~2 % (and the step's bias ~1 %)
    assert torch.allclose(out.mean(0), mean.double(), atol=0.08)
    assert torch.allclose(out.var(0), var.double(), rtol=0.08)


def test_langevin_samples_a_one_dimensional_gaussian_and_returns_its_chain():
    gen = torch.Generator().manual_seed(4)
    start = torch.zeros(3000, 1, dtype=torch.float64)
    out, chain = sc.langevin(gaussian_score([0.5], [0.25]), start, 0.01, 400, generator=gen, return_chain=True)
    assert chain.shape == (401, 3000, 1) and torch.equal(chain[0], start) and torch.equal(chain[-1], out)
    assert abs(float(out.mean()) - 0.5) < 0.03 and abs(float(out.var()) - 0.25) < 0.025


def test_langevin_samples_the_ring_with_the_analytic_score():
    density = data.toy_density("ring")
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(2000, 2, dtype=torch.float64, generator=gen) * 3
    out = sc.langevin(lambda x: sc.mixture_score(x, density.means, density.std), start, 0.005, 600, generator=gen)
    # the cross-entropy of the chains' law under the ring equals its entropy when they sample it
    cross_entropy = float(-density.log_prob(out).mean())
    assert abs(cross_entropy - density.entropy()[0]) < 0.1
    angles = torch.atan2(out[:, 1], out[:, 0])
    counts = torch.bincount(((angles / (2 * math.pi / 8)).round().long() % 8), minlength=8)
    assert int(counts.min()) > 150  # every mode, each with about its 250


def test_the_same_generator_seed_repeats_a_chain():
    score = gaussian_score([0.0], [1.0])
    runs = [sc.langevin(score, torch.zeros(5, 1, dtype=torch.float64), 0.1, 10,
                        generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*runs)


# ---- annealed Langevin ------------------------------------------------------------------------------
def test_geometric_sigmas_have_a_constant_ratio_and_the_right_ends():
    sigmas = sc.geometric_sigmas(3.0, 0.01, 10)
    assert sigmas.shape == (10,) and math.isclose(sigmas[0], 3.0) and math.isclose(sigmas[-1], 0.01)
    ratios = sigmas[:-1] / sigmas[1:]
    assert torch.allclose(ratios, ratios[0].expand(9)) and float(ratios[0]) > 1


def test_annealed_step_sizes_follow_song_and_ermon():
    sigmas = torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64)
    expected = 2e-5 * torch.tensor([64.0, 4.0, 1.0], dtype=torch.float64)  # eps * sigma_i^2 / sigma_L^2
    assert torch.allclose(sc.annealed_step_sizes(sigmas, 2e-5), expected)


def test_annealed_langevin_takes_those_steps_at_each_level():
    sigmas = torch.tensor([2.0, 0.5], dtype=torch.float64)
    seen = []

    def score(x, sigma):  # a constant drift, recording which level it was asked about
        seen.append(float(sigma[0]))
        assert sigma.shape == (len(x),)
        return torch.ones_like(x)

    x0 = torch.zeros(3, 2, dtype=torch.float64)
    out, chain = sc.annealed_langevin(score, x0, sigmas, 4, 0.01, generator=torch.Generator().manual_seed(0),
                                      return_chain=True)
    assert seen == [2.0] * 4 + [0.5] * 4 and chain.shape == (3, 3, 2)
    gen, x = torch.Generator().manual_seed(0), x0.clone()
    for alpha in (0.01 * 16, 0.01):  # by hand: x + alpha / 2 * 1 + sqrt(alpha) z
        for _ in range(4):
            x = x + alpha / 2 + math.sqrt(alpha) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    assert torch.allclose(out, x)


def test_annealed_langevin_with_the_analytic_noised_score_samples_the_mixture():
    density = data.toy_density("ring-sharp")
    sigmas = sc.geometric_sigmas(2.0, 0.005, 8)
    score = lambda x, sigma: sc.mixture_score(x, density.means, (density.std**2 + sigma**2).sqrt())  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    out = sc.annealed_langevin(score, 2.0 * torch.randn(2000, 2, dtype=torch.float64, generator=gen), sigmas, 100,
                               2e-6, generator=gen)
    distance, nearest = torch.cdist(out, density.means).min(1)
    assert float((distance < 3 * density.std).double().mean()) > 0.95
    assert int(torch.bincount(nearest, minlength=8).min()) > 150  # all 8 modes, each near its 250
    # the last level is the data noised at sigma_L: spread sqrt(std^2 + sigma_L^2) per coordinate
    spread = float((out - density.means[nearest]).std())
    assert abs(spread / math.sqrt(density.std**2 + 0.005**2) - 1) < 0.15


# ---- denoising score matching ---------------------------------------------------------------------
def test_the_dsm_loss_is_lowest_at_the_score_of_the_noised_gaussian():
    gen = torch.Generator().manual_seed(0)
    mean, var = torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64)
    x = mean + var.sqrt() * torch.randn(50_000, 2, dtype=torch.float64, generator=gen)
    sigmas = torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)
    levels, noise = torch.randint(3, (len(x),), generator=gen), torch.randn(x.shape, generator=gen, dtype=torch.float64)

    def score(scale=1.0, shift=0.0):
        return lambda y, sigma: scale * -(y - mean - shift) / (var + sigma[:, None] ** 2)

    def loss(fn):
        return float(sc.denoising_score_matching_loss(fn, x, sigmas, levels=levels, noise=noise))

    best = loss(score())
    for worse in (score(0.8), score(1.2), score(shift=0.2), lambda y, sigma: -(y - mean) / var):
        assert loss(worse) > best + 1e-3


def test_a_linear_score_fitted_by_dsm_is_the_analytic_score():
    gen = torch.Generator().manual_seed(1)
    var = 0.5
    x = math.sqrt(var) * torch.randn(12_000, 1, dtype=torch.float64, generator=gen) + 2.0
    sigmas = torch.tensor([0.5], dtype=torch.float64)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    levels = torch.zeros(len(x), dtype=torch.long)
    a, b = (torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in range(2))
    opt = torch.optim.LBFGS([a, b], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = sc.denoising_score_matching_loss(lambda y, s: a * y + b, x, sigmas, levels=levels, noise=noise)
        value.backward()
        return value

    opt.step(closure)
    # the score of N(2, var + sigma^2) is -(y - 2) / (var + sigma^2): slope -1/0.75, intercept 2/0.75; with
    # 12,000 points the fit's standard errors are ~0.017 and ~0.035 (wrong answers: -1/var = -2, -1/sigma^2 = -4)
    assert abs(a.item() + 1 / 0.75) < 0.07 and abs(b.item() - 2 / 0.75) < 0.14


# ---- the EBM ---------------------------------------------------------------------------------
class GaussianEnergy(nn.Module):
    """E(z) = |z - c|^2 / (2 s^2): a Gaussian N(c, s^2 I) up to its normaliser."""

    def __init__(self, centre, s):
        super().__init__()
        self.centre, self.s = torch.tensor(centre), s

    def forward(self, z):
        return ((z - self.centre) ** 2).sum(-1, keepdim=True) / (2 * self.s**2)


@pytest.mark.parametrize("dim", [1, 2])
def test_grid_log_normalizer_of_a_gaussian(dim):
    energy = lambda z: (z**2).sum(-1) / (2 * 0.3**2)  # noqa: E731
    log_z = sc.grid_log_normalizer(energy, [-3.0] * dim, [3.0] * dim, points=400)
    assert abs(log_z - dim / 2 * math.log(2 * math.pi * 0.3**2)) < 1e-4


def test_ebm_log_prob_of_a_gaussian_energy_is_the_gaussians_log_density():
    points = data.toy_density("ring").sample(2000, seed=0)
    model = sc.EBM()
    model.initialize(points)
    model.energy_net = GaussianEnergy([0.3, -0.2], 0.5)
    scale, mean = float(model.data_scale), model.data_mean.double()
    truth = torch.distributions.MultivariateNormal(mean + scale * torch.tensor([0.3, -0.2], dtype=torch.float64),
                                                   (0.5 * scale) ** 2 * torch.eye(2, dtype=torch.float64))
    x = points[:200]
    assert torch.allclose(model.log_prob(x).double(), truth.log_prob(x.double()), atol=2e-3)
    metrics = model.evaluate(x)
    assert abs(metrics["nll_nats"] + float(truth.log_prob(x.double()).mean())) < 2e-3
    assert metrics["quadrature_error_nats"] < 1e-3


def test_ebm_log_prob_integrates_to_one_after_training_a_little():
    torch.manual_seed(0)
    points = data.toy_density("ring").sample(512, seed=0)
    model = sc.EBM(hidden=16, num_layers=2, langevin_steps=2)
    model.initialize(points)
    opt = model.configure_optimizers(1e-2)
    for _ in range(5):
        model.training_step(points[:64], opt)
    low, high = model.box
    low, high = model.from_model_space(low).tolist(), model.from_model_space(high).tolist()
    # the density in the data's units, integrated on an independent (finer) grid over the same box
    log_mass = sc.grid_log_normalizer(lambda x: -model.log_prob(x), low, high, points=600)
    assert abs(log_mass) < 1e-3


def test_the_replay_buffer_is_used_saved_and_reproducible():
    points = data.toy_density("ring").sample(256, seed=0)

    def run(seed):
        torch.manual_seed(seed)
        model = sc.EBM(hidden=16, num_layers=2, langevin_steps=3, buffer_size=500)
        model.initialize(points)
        before = model.replay.clone()
        opt = model.configure_optimizers(1e-3)
        model.training_step(points[:64], opt)
        moved = (model.replay != before).any(1)
        assert int(moved.sum()) == 64, "one step moves exactly one batch of chains"
        for _ in range(2):
            model.training_step(points[:64], opt)
        return model

    a, b, c = run(0), run(0), run(1)
    assert "replay" in a.state_dict()
    assert torch.equal(a.replay, b.replay) and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.replay, c.replay)


def test_ebm_samples_start_from_noise_and_leave_the_buffer_alone():
    model = sc.EBM(hidden=16, num_layers=2, sample_steps=5)
    model.initialize(data.toy_density("ring").sample(256, seed=0))
    before = model.replay.clone()
    torch.manual_seed(0)
    first = model.sample(7)
    torch.manual_seed(0)
    assert torch.equal(first, model.sample(7)) and first.shape == (7, 2)
    assert torch.equal(model.replay, before) and model.sampling_passes() == 5


# ---- the NCSN -------------------------------------------------------------------------------------
def test_ncsn_loss_is_the_noise_prediction_loss_and_the_score_is_scaled_by_sigma():
    model = sc.NCSN(hidden=16, num_layers=2, num_levels=4)
    points = data.toy_density("ring").sample(256, seed=0)
    model.initialize(points)
    z = model.to_model_space(points[:32])
    sigma = model.sigmas[torch.arange(32) % 4]
    eps = model.network(z, model._sigma_time(sigma))
    assert torch.allclose(model.model_score(z, sigma), -eps / sigma[:, None])
    # the score in the data's units at a sigma in the data's units
    model.eval()
    x, s = points[:5], 0.7
    scale = float(model.data_scale)
    expected = model.ema.module(model.to_model_space(x), model._sigma_time(torch.full((5,), s / scale))) / (-s)
    assert torch.allclose(model.score(x, s), expected, atol=1e-6)
    assert model.sampling_passes() == 4 * 50 + 1 and model.sample_info["network_evaluations"] == 201


def test_ncsn_learns_the_noised_score_of_the_ring_at_large_sigma():
    torch.manual_seed(0)
    density = data.toy_density("ring")
    points = density.sample(4000, seed=0)
    model = sc.NCSN(hidden=64, num_layers=2, num_levels=3, sigma_max=2.0, sigma_min=0.5, ema_decay=0.0)
    model.initialize(points)
    opt = model.configure_optimizers(3e-3)
    for step in range(800):
        model.training_step(points[torch.randint(len(points), (256,))], opt)
    model.eval()
    x = density.sample(500, seed=9) + torch.randn(500, 2) * 0.5
    for level in (0, 1):  # the ladder's levels in the data's units (between them the net only interpolates)
        sigma = float(model.sigmas[level] * model.data_scale)
        truth = sc.mixture_score(x.double(), density.means, math.sqrt(density.std**2 + sigma**2)).float()
        error = (model.score(x, sigma) - truth).norm(dim=1).mean() / truth.norm(dim=1).mean()
        assert float(error) < 0.15, (level, float(error))


# ---- input checks -----------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda: sc.langevin(lambda x: x, torch.zeros(3, 2), -0.1, 5),
    lambda: sc.langevin(lambda x: x, torch.zeros(3, 2), 0.1, 0),
    lambda: sc.langevin(lambda x: x, torch.zeros(3), 0.1, 5),
    lambda: sc.geometric_sigmas(0.01, 3.0, 10),
    lambda: sc.geometric_sigmas(3.0, 0.01, 0),
    lambda: sc.annealed_langevin(lambda x, s: x, torch.zeros(3, 2), [], 5, 1e-5),
    lambda: sc.annealed_step_sizes([1.0, -0.5], 1e-5),
    lambda: sc.mixture_score(torch.zeros(3, 2), torch.zeros(4, 3), 0.1),
    lambda: sc.mixture_score(torch.zeros(3, 2), torch.zeros(4, 2), 0.0),
    lambda: sc.denoising_score_matching_loss(lambda x, s: x, torch.zeros(3, 2), [1.0], noise=torch.zeros(3, 1)),
    lambda: sc.grid_log_normalizer(lambda z: z.sum(-1), [0.0] * 3, [1.0] * 3),
    lambda: sc.EBM(reinit_frac=2.0),
    lambda: sc.EBM(langevin_step=0.0),
    lambda: sc.EBM(shape=(2, 2)),
    lambda: sc.NCSN(sigma_min=0.0),
    lambda: sc.NCSN(sigma_min=5.0, sigma_max=1.0),
    lambda: sc.NCSN(steps_per_level=0),
    lambda: sc.NCSN().score(torch.zeros(3, 2), -1.0),
])
def test_bad_inputs_raise_one_line_value_errors(call):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) > 20


def test_ebm_refuses_quadrature_above_two_dimensions():
    model = sc.EBM(shape=(3,), hidden=8, num_layers=1)
    assert not model.has_exact_likelihood
    with pytest.raises(ValueError, match="D <= 2"):
        model.log_normalizer()


# ---- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize("name, settings, keys", [
    ("ncsn", ["steps_per_level=3", "hidden=32"], {"test_dsm_loss", "network_evaluations", "energy_distance"}),
    ("ebm", ["sample_steps=20", "hidden=32", "langevin_steps=5"],
     {"test_nll_nats", "test_quadrature_error_nats", "entropy_nats", "energy_distance"}),
])
def test_command_line_trains_and_prints_json(name, settings, keys, tmp_path):
    env = {**os.environ, "DGM_PROGRESS": "off", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dgm", "train", name, "--data", "ring", "--steps", "20",
                           "--threads", "1", "--out", str(tmp_path), "--set", *settings],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"model", "data", "seed", "train_seconds", "steps", "params", "sample_ms_per_example",
            "sampling_passes"} | keys <= set(result)
    assert result["steps"] == 20 and all(math.isfinite(result[k]) for k in keys if isinstance(result[k], float))
