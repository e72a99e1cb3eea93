"""Chapter 7's flow matching: paths, the marginal-field theorem, ODE solvers, divergences, the
continuous flow's likelihood, classifier-free guidance, and the registry models."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from dgm import metrics
from dgm.flow_matching import (FlowMatching, LatentFlowMatching, cfm_loss, cnf_log_prob, conditional_path,
                               divergence_exact, divergence_hutchinson, drop_labels, euler, guided_velocity,
                               heun, mixture_velocity, ode_solve, path_coefficients, rademacher_like)


def mixture_sample(n: int, means: torch.Tensor, std: float) -> torch.Tensor:
    k = torch.randint(len(means), (n,))
    return means[k] + std * torch.randn(n, means.shape[1], dtype=means.dtype)


def mixture_log_prob(x: torch.Tensor, means: torch.Tensor, std: float) -> torch.Tensor:
    d = x.shape[1]
    sq = (x[:, None] - means[None]).pow(2).sum(2)
    return (torch.logsumexp(-0.5 * sq / std**2, 1) - math.log(len(means))
            - 0.5 * d * math.log(2 * math.pi * std**2))


MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
STD = 0.4


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_paths_hit_their_endpoints_and_their_velocity_is_the_time_derivative(path):
    torch.manual_seed(0)
    x0, x1 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    at = lambda s: conditional_path(path, x0, x1, torch.full((5,), s, dtype=torch.float64))  # noqa: E731
    assert torch.allclose(at(0.0)[0], x0, atol=1e-12), "t = 0 is the noise"
    assert torch.allclose(at(1.0)[0], x1, atol=1e-12), "t = 1 is the data"
    h = 1e-6
    for s in (0.1, 0.5, 0.9):
        finite_difference = (at(s + h)[0] - at(s - h)[0]) / (2 * h)
        assert torch.allclose(at(s)[1], finite_difference, atol=1e-6), s
    if path == "linear":
        assert torch.allclose(at(0.3)[1], x1 - x0)
    else:
        alpha, sigma, _, _ = path_coefficients(path, torch.linspace(0, 1, 11, dtype=torch.float64))
        assert torch.allclose(alpha**2 + sigma**2, torch.ones(11, dtype=torch.float64)), "variance preserving"


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_regressing_on_conditional_velocities_gives_the_marginal_field(path):
    """Lipman et al.'s Theorem 2, numerically: on two point masses in 1-D, the regression optimum
    E[u_t | x_t] (the mean of the conditional targets in narrow bins of x_t) is the analytic marginal field."""
    torch.manual_seed(0)
    points = torch.tensor([[-1.0], [1.5]], dtype=torch.float64)
    n, t = 400_000, 0.6
    x1 = points[torch.randint(2, (n,))]
    x_t, u_t = conditional_path(path, torch.randn(n, 1, dtype=torch.float64), x1,
                                torch.full((n,), t, dtype=torch.float64))
    edges = torch.linspace(-1.0, 1.2, 23, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    which = torch.bucketize(x_t[:, 0], edges) - 1
    inside = (which >= 0) & (which < len(centres))
    sums = torch.zeros(len(centres), dtype=torch.float64).index_add_(0, which[inside], u_t[inside, 0])
    counts = torch.zeros(len(centres), dtype=torch.float64).index_add_(0, which[inside], torch.ones_like(sums[which[inside]]))
    optimum = sums / counts
    # the analytic field averaged over the same bins (the field is steep between the masses)
    field = mixture_velocity(x_t, torch.full((n,), t, dtype=torch.float64), points, 0.0, path=path)
    analytic = torch.zeros_like(sums).index_add_(0, which[inside], field[inside, 0]) / counts
    # within 4 Monte Carlo standard errors per bin (few samples, two distant targets in the middle)
    residual = (u_t - field)[inside, 0]
    squares = torch.zeros_like(sums).index_add_(0, which[inside], residual**2) / counts
    se = (squares / counts).sqrt()
    assert ((optimum - analytic).abs() < 4 * se + 1e-3).all(), ((optimum - analytic).abs() / se).max()
    assert se.max() < 0.05, "the bins hold enough samples to tell a wrong field apart"
    # and the analytic field has a lower regression loss than slightly wrong ones
    assert cfm_loss(field, u_t) < min(cfm_loss(field * 1.05, u_t), cfm_loss(field + 0.05, u_t))


@pytest.mark.parametrize("path", ["linear", "vp"])
def test_the_analytic_mixture_field_samples_the_mixture_and_gives_its_log_density(path):
    torch.manual_seed(0)
    field = lambda x, t: mixture_velocity(x, t, MEANS, STD, path=path)  # noqa: E731
    samples, evaluations = heun(field, torch.randn(1500, 2, dtype=torch.float64), 50)
    assert evaluations == 100
    reference, other = mixture_sample(1500, MEANS, STD), mixture_sample(1500, MEANS, STD)
    noise_level = metrics.energy_distance(other.float(), reference.float())
    assert metrics.energy_distance(samples.float(), reference.float()) < 3 * noise_level + 2e-3
    # the instantaneous change of variables, exact divergence: within 0.01 nats of the true log density
    x = mixture_sample(100, MEANS, STD)
    log_p, se = cnf_log_prob(field, x, steps=100, method="heun", divergence="exact")
    assert se is None
    assert (log_p - mixture_log_prob(x, MEANS, STD)).abs().max() < 0.01


def test_the_solvers_agree_with_scipys_adaptive_solver():
    scipy_integrate = pytest.importorskip("scipy.integrate")
    torch.manual_seed(0)
    field = lambda x, t: mixture_velocity(x, t, MEANS, STD)  # noqa: E731
    start = torch.randn(4, 2, dtype=torch.float64)

    def rhs(s, flat):
        x = torch.as_tensor(flat).view(4, 2)
        return field(x, torch.full((4,), s, dtype=torch.float64)).flatten().numpy()

    exact = torch.as_tensor(scipy_integrate.solve_ivp(rhs, (0.0, 1.0), start.flatten().numpy(), rtol=1e-10,
                                                      atol=1e-10).y[:, -1]).view(4, 2)
    assert (heun(field, start, 400)[0] - exact).abs().max() < 1e-4
    assert (euler(field, start, 2000)[0] - exact).abs().max() < 5e-3


def test_euler_and_heun_on_known_linear_fields_and_their_error_orders():
    start = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    constant = lambda x, t: torch.ones_like(x) * torch.tensor([0.5, -1.0], dtype=x.dtype)  # noqa: E731
    for solve in (euler, heun):
        end, _ = solve(constant, start, 3)
        assert torch.allclose(end, start + torch.tensor([0.5, -1.0], dtype=torch.float64)), "exact on a constant"
    # v = t: x(1) = x(0) + 1/2; Heun (trapezoid) is exact on a field linear in t, Euler is not
    in_time = lambda x, t: t[:, None].expand_as(x)  # noqa: E731
    assert torch.allclose(heun(in_time, start, 4)[0], start + 0.5)
    assert not torch.allclose(euler(in_time, start, 4)[0], start + 0.5)
    # v = A x: x(1) = expm(A) x(0); halving the step halves Euler's error and quarters Heun's
    a = torch.tensor([[0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64)
    linear = lambda x, t: x @ a.T  # noqa: E731
    exact = start @ torch.linalg.matrix_exp(a).T
    for solve, order in ((euler, 1), (heun, 2)):
        errors = [float((solve(linear, start, n)[0] - exact).norm()) for n in (20, 40)]
        assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.1), (solve.__name__, errors)
    backwards, _ = ode_solve(linear, exact, 200, "heun", t_start=1.0, t_end=0.0)
    assert torch.allclose(backwards, start, atol=1e-4), "integrating back from t = 1 returns to the start"


def small_field(dim: int = 3) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(dim + 1, 16), nn.Tanh(), nn.Linear(16, dim)).double()
    return lambda x, t: net(torch.cat([x, t[:, None]], 1))


def test_the_exact_divergence_is_the_trace_of_the_jacobian():
    field = small_field()
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    v, div = divergence_exact(field, x, t)
    assert torch.allclose(v, field(x, t))
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(lambda p: field(p[None], t[i:i + 1])[0], x[i])
        assert div[i] == pytest.approx(float(torch.trace(jacobian)), abs=1e-10)


def test_hutchinsons_estimate_is_unbiased_with_the_right_standard_error():
    torch.manual_seed(0)
    field = small_field()
    x, t = torch.randn(2, 3, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    _, exact = divergence_exact(field, x, t)
    draws = 4000
    xs, ts = x.repeat(draws, 1), t.repeat(draws)
    probe = rademacher_like(xs)
    assert set(probe.unique().tolist()) == {-1.0, 1.0}
    _, estimates = divergence_hutchinson(field, xs, ts, probe)
    estimates = estimates.view(draws, 2)
    se = estimates.std(0) / math.sqrt(draws)
    assert ((estimates.mean(0) - exact).abs() < 4 * se).all(), (estimates.mean(0), exact, se)
    assert (se > 0).all(), "a nonlinear field's estimate varies from probe to probe"


def test_hutchinson_is_unbiased_on_a_small_image_model():
    torch.manual_seed(0)
    model = FlowMatching((1, 8, 8), "categorical", num_levels=17, channels=8).eval()
    x, t = torch.randn(1, 1, 8, 8), torch.full((1,), 0.5)
    field = model.field()
    _, exact = divergence_exact(field, x, t)
    draws = 300
    _, estimates = divergence_hutchinson(field, x.repeat(draws, 1, 1, 1), t.repeat(draws),
                                         rademacher_like(x.repeat(draws, 1, 1, 1)))
    se = float(estimates.std() / math.sqrt(draws))
    assert abs(float(estimates.mean() - exact)) < 4 * se + 1e-4


def test_the_log_density_of_a_linear_flow_is_the_gaussian_it_pushes_noise_to():
    """v(x, t) = A x carries N(0, I) at t = 0 to N(0, expm(A) expm(A)^T) at t = 1."""
    a = torch.tensor([[0.3, 0.5], [-0.2, -0.4]], dtype=torch.float64)
    field = lambda x, t: x @ a.T  # noqa: E731
    m = torch.linalg.matrix_exp(a)
    gaussian = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), m @ m.T)
    torch.manual_seed(0)
    x = gaussian.sample((20,))
    log_p, _ = cnf_log_prob(field, x, steps=64, method="heun", divergence="exact")
    assert torch.allclose(log_p, gaussian.log_prob(x), atol=1e-4)
    estimate, se = cnf_log_prob(field, x, steps=16, method="heun", divergence="hutchinson", probes=400)
    assert se is not None and (se > 0).all()
    assert ((estimate - gaussian.log_prob(x)).abs() < 4 * se + 1e-3).all()


def test_classifier_free_guidance_combines_the_two_fields():
    conditional, unconditional = torch.randn(3, 2), torch.randn(3, 2)
    assert torch.equal(guided_velocity(conditional, unconditional, 0.0), conditional)
    assert torch.allclose(guided_velocity(conditional, unconditional, -1.0), unconditional)
    assert torch.allclose(guided_velocity(conditional, unconditional, 2.0), 3 * conditional - 2 * unconditional)
    torch.manual_seed(0)
    model = FlowMatching((2,), num_classes=3, hidden=16, num_layers=2, ema_decay=0.0).eval()
    x, t, labels = torch.randn(6, 2), torch.rand(6), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        v_c, v_u = model.velocity(x, t, labels), model.velocity(x, t, torch.full_like(labels, 3))
        assert torch.equal(model.field(labels, 0.0)(x, t), v_c), "w = 0 is the conditional model"
        assert torch.allclose(model.field(labels, 2.0)(x, t), 3 * v_c - 2 * v_u, atol=1e-6)
        assert not torch.allclose(v_c, v_u), "the label changes the field"
        torch.manual_seed(1)
        plain = model.sample(6, labels=labels, guidance=0.0)
        torch.manual_seed(1)
        assert torch.equal(plain, model.sample(6, labels=labels, guidance=0.0))


def test_label_dropout_reaches_the_unconditional_branch_at_its_rate():
    torch.manual_seed(0)
    labels = torch.randint(10, (200_000,))
    dropped = drop_labels(labels, 0.15, null_label=10)
    rate = float((dropped == 10).double().mean())
    assert abs(rate - 0.15) < 4 * math.sqrt(0.15 * 0.85 / len(labels))
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept]), "the rest keep their labels"
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)


def test_a_zero_field_gives_the_base_density_in_the_datas_units():
    """With v = 0 the flow is the identity: log p is the standard normal in model space plus the map's
    log-Jacobian (points: standardisation; images: dequantised levels y -> 2 y / K - 1)."""
    torch.manual_seed(0)
    points = FlowMatching((2,), hidden=8, num_layers=2, eval_steps=2)
    points.initialize(torch.randn(100, 2) * 3 + 1)
    images = FlowMatching((1, 8, 8), "categorical", num_levels=17, channels=8, eval_steps=2)
    for model in (points, images):
        last = model.ema.module.output
        last = last[-1] if isinstance(last, nn.Sequential) else last
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    x = torch.randn(5, 2) * 3 + 1
    z = (x - points.data_mean) / points.data_scale
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1) - 2 * torch.log(points.data_scale)
    assert torch.allclose(points.log_prob(x), expected, atol=1e-5)
    y = torch.randint(17, (3, 1, 8, 8)).float() + torch.rand(3, 1, 8, 8)
    v = 2 * y / 17 - 1
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(v).flatten(1).sum(1) + 64 * math.log(2 / 17)
    assert torch.allclose(images.log_density(y), expected, atol=1e-4)
    out = images.evaluate(torch.randint(17, (4, 1, 8, 8)))
    assert {"nll_bound_nats", "bpd_bound", "nll_se", "likelihood_evaluations"} <= set(out)


@pytest.mark.parametrize("call, fragment", [
    (lambda: conditional_path("straight", torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2)), "path must be"),
    (lambda: conditional_path("linear", torch.zeros(2, 1), torch.zeros(2, 1), torch.full((2,), 1.5)), "[0, 1]"),
    (lambda: conditional_path("linear", torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1)), "(batch,)"),
    (lambda: conditional_path("linear", torch.zeros(2, 1), torch.zeros(3, 1), torch.zeros(3)), "same shape"),
    (lambda: ode_solve(lambda x, t: x, torch.zeros(2, 1), 4, "rk4"), "method must be"),
    (lambda: ode_solve(lambda x, t: x, torch.zeros(2, 1), 0), "steps"),
    (lambda: cnf_log_prob(lambda x, t: x, torch.zeros(2, 1), 4, probes=2), "no probes"),
    (lambda: drop_labels(torch.zeros(3, dtype=torch.long), 1.0, 10), "dropout"),
    (lambda: FlowMatching((2,), path="straight"), "path must be"),
    (lambda: FlowMatching((2,), guidance=1.0), "num_classes"),
    (lambda: FlowMatching((2,), sampler="rk4"), "sampler must be"),
    (lambda: FlowMatching((2,), hidden=8, num_layers=2).sample(3, labels=torch.zeros(3, dtype=torch.long)),
     "unconditional"),
    (lambda: FlowMatching((2,), num_classes=3, hidden=8, num_layers=2).sample(2, labels=torch.tensor([0, 5])),
     "labels must be"),
    (lambda: FlowMatching((2,), hidden=8, num_layers=2).loss(torch.zeros(4, 3)), "shape"),
])
def test_wrong_inputs_raise_one_line_value_errors(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_latent_model_trains_its_autoencoder_first_and_samples_images():
    from dgm import data

    split = data.load("digits", "val")
    torch.manual_seed(0)
    model = LatentFlowMatching((1, 8, 8), "categorical", 17, latent_dim=4, ae_hidden=(32,), ae_steps=20,
                               hidden=16, num_layers=2, sample_steps=2)
    model.initialize(split.x)
    assert bool(model.ae_trained) and not any(p.requires_grad for p in model.autoencoder.parameters())
    codes = model.encode(split.x)
    assert codes.shape == (len(split.x), 4)
    # the code flow's standardisation is taken from the codes of the training images
    assert torch.allclose(model.flow.data_mean, codes.mean(0), atol=1e-5)
    model.train()
    assert not model.autoencoder.training, "the frozen autoencoder stays in eval mode (no dropout)"
    samples = model.sample(5)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() <= 16
    assert model.sampling_passes() == 2 * 2 + 1


def test_a_guided_run_scores_every_weight_of_its_sweep():
    from dgm import run

    overrides = {"channels": 8, "eval_steps": 2, "eval_probes": 2, "sample_steps": 1,
                 "guidance_sweep": (0.0, 2.0)}
    _, _, result = run.train("fm-guided", "digits", steps=3, overrides=overrides, progress=False, threads=1)
    for key in ("class_accuracy", "class_accuracy_w0", "class_accuracy_w2", "fd_w0", "fd_w2",
                "test_nll_bound_nats", "test_nll_se", "network_evaluations", "sample_ms_per_example"):
        assert key in result, key
    assert result["network_evaluations"] == 2
    assert result["test_nll_se"] > 0


def test_the_command_line_trains_fm_on_the_ring():
    out = subprocess.run([sys.executable, "-m", "dgm", "train", "fm", "--data", "ring", "--steps", "20",
                          "--threads", "1", "--set", "eval_steps=2", "hidden=32"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    result = json.loads(out[out.index("{"):])
    for key in ("test_nll_nats", "entropy_nats", "network_evaluations", "sample_ms_per_example"):
        assert key in result, key
    assert result["network_evaluations"] == 20  # Heun, 10 steps
