"""dgm.diffusion: schedules and steps against Hugging Face diffusers, the forward chain, the bound, the model."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from dgm import diffusion as d
from dgm import registry, run

diffusers = pytest.importorskip("diffusers")  # test-only oracle (requirements-dev.txt)

T = 1000
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def toy_eps(x, t):
    """A fixed, smooth stand-in for a trained network: depends on x and t, so a wrong index shows."""
    return 0.3 * torch.tanh(x) + 0.1 * torch.sin(t.float() / 37.0).view(-1, *([1] * (x.ndim - 1)))


# ---- oracles: diffusers ------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedules_match_diffusers(name):
    ours = d.Schedule.make(name, T)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULE[name])
    assert torch.allclose(ours.betas, theirs.betas.double(), atol=1e-6, rtol=0)
    assert torch.allclose(ours.alphas_cumprod, theirs.alphas_cumprod.double(), atol=1e-6, rtol=0)


def diffusers_in_float64(scheduler, schedule):
    """Hand diffusers our float64 schedule (checked against theirs above), so its step runs in float64.

    With its own float32 schedule, ``1 - abar_t`` cancels badly near t = 0 and
    ``x0 = (x - ...) / sqrt(abar_t)`` blows up at the cosine schedule's last step:
    there diffusers itself is off by up to ~2e-3 (see the stock test below).
    """
    scheduler.betas, scheduler.alphas = schedule.betas, schedule.alphas
    scheduler.alphas_cumprod = schedule.alphas_cumprod
    return scheduler


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 1, 5, 9, 10, 100, 500, 998, 999])
def test_one_ddpm_step_matches_diffusers(name, t):
    schedule = d.Schedule.make(name, T)
    theirs = diffusers_in_float64(diffusers.DDPMScheduler(
        num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULE[name], clip_sample=False), schedule)
    gen = torch.Generator().manual_seed(t)
    x_t = torch.randn(8, 1, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(8, 1, 4, 4, generator=gen, dtype=torch.float64)
    # diffusers draws its noise with randn from the generator we hand it: draw the same numbers
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    expected = theirs.step(eps, t, x_t, generator=torch.Generator().manual_seed(123)).prev_sample
    got = d.ddpm_step(eps, x_t, t, schedule, noise=noise)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("t", [10, 20, 100, 500, 900])
def test_one_ddpm_step_matches_stock_float32_diffusers(t):
    """Diffusers as shipped (float32 schedule), where its rounding is small: float32 inputs, as in training."""
    schedule = d.Schedule.make("linear", T)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=False)
    gen = torch.Generator().manual_seed(t)
    x_t, eps = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen)
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    expected = theirs.step(eps, t, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    assert (d.ddpm_step(eps, x_t, t, schedule, noise=noise) - expected).abs().max() <= 2e-4


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [10, 50])
def test_one_ddim_step_matches_diffusers(name, eta, steps):
    schedule = d.Schedule.make(name, T)
    theirs = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULE[name],
                                     clip_sample=False, set_alpha_to_one=True)
    theirs = diffusers_in_float64(theirs, schedule)
    theirs.set_timesteps(steps)
    gen = torch.Generator().manual_seed(steps)
    for t in theirs.timesteps[:3].tolist() + theirs.timesteps[-2:].tolist():
        x_t, eps, noise = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
        expected = theirs.step(eps, t, x_t, eta=eta, variance_noise=noise).prev_sample
        t_prev = max(t - T // steps, -1)  # diffusers' spacing ("leading"); below 0 means the data
        got = d.ddim_step(eps, x_t, t, t_prev, schedule, eta=eta, noise=noise)
        assert (got - expected).abs().max() <= 1e-6, (t, eta)


# ---- the forward process ------------------------------------------------------
@pytest.mark.parametrize("name,t", [("linear", 0), ("linear", 49), ("cosine", 20)])
def test_closed_form_q_matches_chained_single_steps(name, t):
    """Run t+1 single noising steps from a fixed x0 on many chains; mean and variance must match q(x_t | x0)."""
    schedule = d.Schedule.make(name, 50)
    x0 = torch.tensor([1.5, -0.7, 0.0], dtype=torch.float64)
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    x = x0.expand(n, 3).clone()
    for s in range(t + 1):
        beta = schedule.betas[s]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    closed = d.q_sample(x0.expand(n, 3), t, torch.randn(n, 3, generator=gen, dtype=torch.float64), schedule)
    abar = schedule.alphas_cumprod[t]
    # 6 standard errors of each sample mean / variance: a real error (e.g. alpha for abar) is far bigger
    mean_se, var_se = math.sqrt((1 - abar) / n), (1 - abar) * math.sqrt(2 / n)
    for sample in (x, closed):
        assert torch.allclose(sample.mean(0), abar.sqrt() * x0, atol=6 * mean_se, rtol=0)
        assert torch.allclose(sample.var(0), (1 - abar).expand(3), atol=6 * var_se, rtol=0)


def test_forward_process_ends_in_standard_normal():
    for name in ("linear", "cosine"):
        abar_T = float(d.Schedule.make(name, T).alphas_cumprod[-1])
        assert abar_T < 1e-4  # sqrt(abar_T) x0 is negligible: x_T is N(0, I) up to 1e-2 in the mean


def test_posterior_mean_and_variance_match_bayes_rule():
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0): multiply the two Gaussians by hand."""
    schedule = d.Schedule.make("cosine", 100)
    x0, x_t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for t in (1, 40, 99):
        alpha, beta, abar_prev = schedule.alphas[t], schedule.betas[t], schedule.alphas_cumprod[t - 1]
        # likelihood of x_{t-1}: N(x_t / sqrt(alpha), beta / alpha); prior: N(sqrt(abar_prev) x0, 1 - abar_prev)
        precision = alpha / beta + 1 / (1 - abar_prev)
        mean = (x_t * alpha.sqrt() / beta + abar_prev.sqrt() * x0 / (1 - abar_prev)) / precision
        got_mean, got_var = d.posterior_mean_variance(x0, x_t, t, schedule)
        assert torch.allclose(got_mean, mean, atol=1e-10)
        assert torch.allclose(got_var.flatten(), (1 / precision).expand(5), atol=1e-12)


# ---- samplers -------------------------------------------------------------------
def exact_eps_for_gaussian_data(schedule, data_std=0.5):
    """The ideal noise predictor when the data are N(0, data_std^2): E[eps | x_t], a stand-in for a trained network."""
    def eps(x, t):
        abar = schedule.alphas_cumprod.float()[t].view(-1, *([1] * (x.ndim - 1)))
        return (1 - abar).sqrt() * x / (abar * data_std**2 + 1 - abar)
    return eps


def test_ddim_with_eta_one_over_all_steps_is_the_ddpm_sampler():
    schedule = d.Schedule.make("linear", T)
    eps = exact_eps_for_gaussian_data(schedule)
    start = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    ddpm = d.sample_loop(eps, start, schedule, "ddpm")
    torch.manual_seed(1)
    ddim = d.sample_loop(eps, start, schedule, "ddim", steps=T, eta=1.0)
    torch.manual_seed(1)
    deterministic = d.sample_loop(eps, start, schedule, "ddim", steps=T, eta=0.0)
    assert (ddpm - ddim).abs().max() < 1e-4
    assert (ddpm - deterministic).abs().max() > 0.1  # eta matters: the test can tell the samplers apart
    # and both samplers, given the ideal network, draw the data distribution N(0, 0.5^2)
    for samples in (ddpm, deterministic):
        assert float(samples.std()) == pytest.approx(0.5, abs=0.02)


def test_clipping_bounds_the_guess_of_x0():
    """From almost pure noise a small error in eps makes a huge x0 guess; the clip keeps it in the data's range."""
    schedule = d.Schedule.make("cosine", T)
    x_t, eps = torch.randn(100, 2), torch.randn(100, 2)  # eps unrelated to x_t: a bad prediction
    wild = d.ddim_step(eps, x_t, T - 1, 899, schedule)
    clipped = d.ddim_step(eps, x_t, T - 1, 899, schedule, clip=2.0)
    assert wild.abs().max() > 100
    # |x_prev| <= sqrt(abar_prev) * clip + sqrt(1 - abar_prev) * |eps recomputed from the clipped guess ~ x_t|
    assert clipped.abs().max() <= 2.0 * float(schedule.alphas_cumprod[899].sqrt()) + 1.01 * x_t.abs().max()
    again = d.ddpm_step(eps, x_t, 5, schedule, noise=torch.zeros_like(x_t), clip=0.5)
    mean, _ = d.posterior_mean_variance(d.predict_x0(x_t, torch.full((100,), 5), eps, schedule).clamp(-0.5, 0.5),
                                        x_t, 5, schedule)
    assert torch.allclose(again, mean)


def test_ddim_timesteps_are_evenly_spaced_from_the_last_step():
    assert d.ddim_timesteps(1000, 4) == [999, 749, 499, 249]
    assert d.ddim_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="at most"):
        d.ddim_timesteps(10, 11)


def test_ddim_eta_zero_is_deterministic_and_counts_its_network_calls():
    calls = []

    def counting(x, t):
        calls.append(int(t[0]))
        return toy_eps(x, t)

    schedule = d.Schedule.make("linear", T)
    start = torch.randn(16, 2)
    a = d.sample_loop(counting, start, schedule, "ddim", steps=20, eta=0.0)
    b = d.sample_loop(toy_eps, start, schedule, "ddim", steps=20, eta=0.0)
    assert torch.equal(a, b) and len(calls) == 20 and calls[0] == T - 1


# ---- the bound --------------------------------------------------------------------
def test_gaussian_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(100, generator=gen), torch.randn(100, generator=gen)
    v1, v2 = torch.rand(100, generator=gen) + 0.01, torch.rand(100, generator=gen) + 0.01
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(m1, v1.sqrt()),
                                                 torch.distributions.Normal(m2, v2.sqrt()))
    assert torch.allclose(d.gaussian_kl(m1, v1.log(), m2, v2.log()), expected, atol=1e-5)


def test_bound_terms_match_torch_distributions():
    """Rebuild the prior term and one diffusion KL with torch.distributions from the same random draws."""
    torch.manual_seed(0)
    model = d.DDPM((2,), timesteps=4, hidden=16, num_layers=2)
    schedule = model.schedule
    x = torch.randn(7, 2)
    torch.manual_seed(5)
    terms = model.bound_terms(x)
    Normal, kl = torch.distributions.Normal, torch.distributions.kl_divergence
    abar = schedule.alphas_cumprod.float()
    prior = kl(Normal(abar[-1].sqrt() * x, (1 - abar[-1]).sqrt()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(terms["prior"], prior, atol=1e-5)

    torch.manual_seed(5)  # replay the draws: one x_t per step t = 1..T-1, in order
    diffusion = torch.zeros(7)
    with torch.no_grad():
        for t in range(1, 4):
            x_t = abar[t].sqrt() * x + (1 - abar[t]).sqrt() * torch.randn_like(x)
            tt = torch.full((7,), t)
            beta, alpha, abar_prev = schedule.betas[t].float(), schedule.alphas[t].float(), abar[t - 1]
            var = beta * (1 - abar_prev) / (1 - abar[t])
            q_mean = beta * abar_prev.sqrt() / (1 - abar[t]) * x + (1 - abar_prev) * alpha.sqrt() / (1 - abar[t]) * x_t
            p_mean = (x_t - beta / (1 - abar[t]).sqrt() * model.eps(x_t, tt)) / alpha.sqrt()  # Ho et al. eq. 11
            diffusion += kl(Normal(q_mean, var.sqrt()), Normal(p_mean, var.sqrt())).sum(1)
    # float32: each KL divides a small difference of means by a small variance
    assert torch.allclose(terms["diffusion"], diffusion, rtol=1e-3)
    assert torch.allclose(terms["total"], terms["prior"] + terms["diffusion"] + terms["decoder"])


def test_discretized_decoder_is_a_distribution_over_the_levels():
    levels = 17
    values = torch.linspace(-1, 1, levels).view(levels, 1)
    for mean, std in ((0.0, 0.1), (0.93, 0.02), (-2.0, 1.0)):
        log_p = d.discretized_gaussian_log_likelihood(values, torch.tensor(mean), torch.tensor(std), levels)
        assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-5)
        assert int(log_p.argmax()) == int(torch.argmin((values.flatten() - max(-1, min(1, mean))).abs()))


def test_bound_on_digits_is_in_nats_and_a_subsampled_estimate_is_unbiased():
    torch.manual_seed(0)
    model = d.DDPM((1, 8, 8), kind="categorical", num_levels=17, timesteps=20, channels=4, schedule="linear")
    x = torch.randint(17, (4, 1, 8, 8))
    full = torch.stack([model.bound_terms(x)["diffusion"] for _ in range(100)]).mean(0)
    estimate = torch.stack([model.bound_terms(x, num_timesteps=5)["diffusion"] for _ in range(400)]).mean(0)
    assert torch.allclose(estimate, full, rtol=0.05)
    total = model.bound_terms(x)["total"]
    # an untrained network is worse than uniform pixels (64 ln 17 nats) but the bound is finite
    assert torch.isfinite(total).all() and (total > 64 * math.log(17)).all()


# ---- the model ------------------------------------------------------------------------
def train_briefly(model, x, steps, lr=3e-3, batch=256):
    from dgm.train import fit

    return fit(model, x, None, max_steps=steps, batch_size=batch, lr=lr, seed=0, device="cpu", progress=False)


def test_ddpm_learns_a_two_point_mixture():
    """A tiny diffusion model on {-1, +1} + small noise: its samples must split between the two points."""
    torch.manual_seed(0)
    data = (torch.randint(2, (2000, 1)) * 2 - 1).float() + 0.05 * torch.randn(2000, 1)
    model = d.DDPM((1,), timesteps=100, hidden=64, num_layers=3, ema_decay=0.99)
    train_briefly(model, data, 1500)
    torch.manual_seed(1)
    for sampler, steps in (("ddpm", None), ("ddim", 20)):
        samples = model.sample(1000, sampler=sampler, steps=steps).flatten()
        near = ((samples.abs() - 1).abs() < 0.25).float().mean()
        assert near > 0.85, (sampler, float(near))
        assert 0.35 < float((samples > 0).float().mean()) < 0.65


def test_samples_have_the_data_format():
    torch.manual_seed(0)
    digits = d.DDPM((1, 8, 8), kind="categorical", num_levels=17, timesteps=20, channels=8)
    levels = digits.sample(3)
    assert levels.shape == (3, 1, 8, 8) and levels.dtype == torch.int64
    assert levels.min() >= 0 and levels.max() <= 16
    grey = d.DDPM((1, 8, 8), kind="grey", timesteps=20, channels=8).sample(2)
    assert grey.is_floating_point() and grey.min() >= 0 and grey.max() <= 1
    assert torch.equal(grey * 255, (grey * 255).round())


def test_inpainting_keeps_the_known_pixels():
    torch.manual_seed(0)
    model = d.DDPM((1, 8, 8), kind="categorical", num_levels=17, timesteps=30, channels=8)
    x = torch.randint(17, (2, 1, 8, 8))
    known = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    known[..., :4, :] = True
    out = model.inpaint(x, known)
    assert torch.equal(out[..., :4, :], x[..., :4, :])
    assert not torch.equal(out[..., 4:, :], x[..., 4:, :])
    edited = model.sdedit(x, strength=0.01, steps=10)  # barely noised: stays close to the input
    assert (edited - x).abs().float().mean() < 1.0


def test_evaluate_reports_the_bound_and_the_sampler():
    torch.manual_seed(0)
    model = d.DDPM((2,), timesteps=50, hidden=16, num_layers=2, sampler="ddim", sample_steps=10, eval_timesteps=10)
    x = torch.randn(30, 2)
    out = model.evaluate(x)
    assert set(out) == {"neg_elbo_nats", "network_evaluations"} and out["network_evaluations"] == 10
    assert math.isfinite(out["neg_elbo_nats"]) and model.evaluate(x) == out  # seeded: repeatable
    assert model.sample_info == {"sampler": "ddim", "sample_steps": 10, "eta": 0.0, "network_evaluations": 10}


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = d.DDPM((2,), timesteps=20, hidden=16, num_layers=2, schedule="cosine")
    model.initialize(torch.randn(100, 2) * 3 + 1)
    path = tmp_path / "m.pt"
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    again = d.DDPM(**ckpt["config"])
    again.load_state_dict(ckpt["state_dict"])
    torch.manual_seed(3)
    a = model.sample(5)
    torch.manual_seed(3)
    assert torch.equal(a, again.sample(5))


@pytest.mark.parametrize("kwargs,message", [
    ({"shape": (2,), "sampler": "euler"}, "sampler must be one of"),
    ({"shape": (2,), "sampler": "ddpm", "sample_steps": 10}, "set sampler='ddim'"),
    ({"shape": (2,), "sampler": "ddim", "sample_steps": 5000}, "at most timesteps"),
    ({"shape": (2,), "schedule": "sigmoid"}, "schedule must be one of"),
    ({"shape": (1, 7, 7), "kind": "grey"}, "even H and W"),
    ({"shape": (1, 8, 8), "kind": "categorical"}, "num_levels"),
    ({"shape": (2,), "eta": -1.0}, "eta must be"),
    ({"shape": (2,), "lr_schedule": "linear"}, "lr_schedule must be"),
    ({"shape": (2,), "lr_schedule": "halving:0"}, "fraction of the run"),
])
def test_bad_settings_give_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        d.DDPM(**kwargs)


def test_bad_inputs_give_a_clear_error():
    schedule = d.Schedule.make("linear", 10)
    with pytest.raises(ValueError, match="0..9"):
        d.q_sample(torch.zeros(2, 2), 10, torch.zeros(2, 2), schedule)
    with pytest.raises(ValueError, match="shape of x0"):
        d.q_sample(torch.zeros(2, 2), 1, torch.zeros(2, 3), schedule)
    with pytest.raises(ValueError, match="integer step"):
        d.q_sample(torch.zeros(2, 2), torch.tensor(1.0), torch.zeros(2, 2), schedule)
    model = d.DDPM((1, 8, 8), kind="categorical", num_levels=17, timesteps=10, channels=8)
    with pytest.raises(ValueError, match="shaped"):
        model.loss(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="0..16"):
        model.loss(torch.full((2, 1, 8, 8), 20))


def test_registry_builds_ddpm_for_points_and_digits():
    from dgm import data

    for name, net in (("ring-sharp", d.MLPDenoiser), ("digits", d.UNet)):
        model = registry.build("ddpm", data.load(name, "val").info())
        assert isinstance(model.network, net)


def test_command_line_trains_ddpm_and_reports_modes_and_sampler(tmp_path):
    env = {**os.environ, "DGM_PROGRESS": "off"}
    proc = subprocess.run([sys.executable, "-m", "dgm", "train", "ddpm", "--data", "ring-sharp", "--steps", "30",
                           "--out", str(tmp_path), "--set", "timesteps=40", "sampler=ddim", "sample_steps=8",
                           "eval_timesteps=5", "hidden=32"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"modes_captured", "high_quality_frac", "train_seconds", "test_neg_elbo_nats"} <= set(result)
    assert result["test_network_evaluations"] == 8
    model, ckpt = run.load_checkpoint(str(tmp_path / "ddpm-ring-sharp-seed0.pt"))
    assert ckpt["config"]["sampler"] == "ddim" and model.sample(4).shape == (4, 2)
