"""dgm.vae: the KL formula, the ELBO and the IWAE bound against a model whose log p(x) is known
in closed form (probabilistic PCA), the reparameterised gradient against the score-function
gradient, the decoder likelihoods, and the model API."""

import math

import pytest
import torch

from dgm import data, registry
from dgm.train import fit
from dgm.vae import (LIKELIHOODS, VAE, Autoencoder, PixelLikelihood, kl_to_standard_normal, log_normal,
                     reparameterize)


# ---------------------------------------------------------------------------
# the KL term
# ---------------------------------------------------------------------------
def test_kl_to_standard_normal_equals_torch_kl_divergence():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 7, generator=gen, dtype=torch.float64) * 2
    logvar = torch.randn(50, 7, generator=gen, dtype=torch.float64) * 1.5
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(kl_to_standard_normal(mu, logvar), expected, atol=1e-6, rtol=0)


def test_kl_to_standard_normal_is_zero_only_at_the_prior():
    zero = torch.zeros(3, 4)
    assert torch.equal(kl_to_standard_normal(zero, zero), torch.zeros(3))
    assert (kl_to_standard_normal(zero + 0.1, zero) > 0).all() and (kl_to_standard_normal(zero, zero - 0.1) > 0).all()


def test_kl_to_standard_normal_stays_finite_for_a_confident_encoder():
    # exp(-200) underflows to 0 in float32: a formula in variances would take log(0)
    mu, logvar = torch.zeros(2, 3), torch.full((2, 3), -200.0)
    assert torch.allclose(kl_to_standard_normal(mu, logvar), torch.full((2,), 3 * 0.5 * 199.0))


def test_log_normal_equals_torch_normal():
    gen = torch.Generator().manual_seed(1)
    z, mu, logvar = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(log_normal(z, mu, logvar), expected, atol=1e-10)


# ---------------------------------------------------------------------------
# probabilistic PCA: a linear-Gaussian VAE whose log p(x) and posterior are known
# ---------------------------------------------------------------------------
DATA_DIM, LATENT_DIM, SIGMA = 4, 2, 0.5


def _ppca(exact_posterior: bool = True):
    """A VAE with no hidden layers and a gaussian likelihood: p(z) = N(0, I),
    p(x | z) = N(W z + b, sigma^2 I). With W's columns orthogonal, the posterior
    N(M^-1 W^T (x - b), sigma^2 M^-1), M = W^T W + sigma^2 I, is diagonal, so
    the encoder can represent it exactly. Returns (model, log p(x) function)."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(DATA_DIM, LATENT_DIM, generator=gen, dtype=torch.float64))
    W = q * torch.tensor([1.5, 0.7], dtype=torch.float64)
    b = torch.randn(DATA_DIM, generator=gen, dtype=torch.float64)
    model = VAE(shape=(DATA_DIM,), likelihood="gaussian", num_levels=None, latent_dim=LATENT_DIM, hidden=()).double()
    m_diag = (W * W).sum(0) + SIGMA**2
    enc_weight = W.T / m_diag[:, None]
    post_logvar = torch.log(SIGMA**2 / m_diag)
    if not exact_posterior:  # a deliberately wrong q: shifted mean, too narrow
        post_logvar = post_logvar - 1.0
    with torch.no_grad():
        model.decoder[0].weight.copy_(W)
        model.decoder[0].bias.copy_(b)
        model.likelihood.log_sigma.fill_(math.log(SIGMA))
        model.encoder[0].weight.copy_(torch.cat([enc_weight, torch.zeros_like(enc_weight)]))
        model.encoder[0].bias.copy_(torch.cat([-enc_weight @ b + (0 if exact_posterior else 0.3), post_logvar]))
    cov = W @ W.T + SIGMA**2 * torch.eye(DATA_DIM, dtype=torch.float64)
    marginal = torch.distributions.MultivariateNormal(b, covariance_matrix=cov)
    return model, marginal


def _ppca_data(n=6):
    _, marginal = _ppca()
    torch.manual_seed(3)
    return marginal.sample((n,))


def test_ppca_elbo_with_the_exact_posterior_is_log_p_x():
    model, marginal = _ppca()
    x = _ppca_data()
    exact = marginal.log_prob(x)
    mu, logvar = model.encode(x)
    # E_q[log p(x | z)] in closed form for p(x | z) = N(W z + b, sigma^2 I), q = N(mu, diag(var))
    W, b = model.decoder[0].weight, model.decoder[0].bias
    residual = (x - mu @ W.T - b).pow(2).sum(-1) + (W.pow(2) * logvar.exp()[:, None, :]).sum((1, 2))
    expected_reconstruction = -0.5 * DATA_DIM * math.log(2 * math.pi * SIGMA**2) - residual / (2 * SIGMA**2)
    model_kl = model.elbo(x)[2]
    assert torch.allclose(expected_reconstruction - model_kl, exact, atol=1e-6, rtol=0)
    # with q = p(z | x), log p(x, z) - log q(z | x) = log p(x) for EVERY z: the one-sample bound is exact
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.allclose(model.iwae_bound(x, 1), exact, atol=1e-6, rtol=0)
    # the model's Monte Carlo reconstruction term (analytic KL) converges to the closed form
    torch.manual_seed(0)
    elbo, reconstruction, kl = model.elbo(x, num_samples=20_000)
    assert torch.allclose(reconstruction, expected_reconstruction, atol=0.02)
    assert torch.allclose(elbo, reconstruction - kl)
    assert (kl > 0).all()


def test_ppca_elbo_with_a_wrong_posterior_is_strictly_below_log_p_x():
    model, marginal = _ppca(exact_posterior=False)
    x = _ppca_data()
    torch.manual_seed(0)
    elbo = model.elbo(x, num_samples=2000)[0]
    gap = marginal.log_prob(x) - elbo  # = KL(q || p(z | x)) > 0, up to Monte Carlo error
    assert (gap > 0.05).all(), gap


def test_ppca_iwae_with_the_prior_as_proposal_approaches_log_p_x():
    model, marginal = _ppca()
    x = _ppca_data()
    exact = marginal.log_prob(x)
    gaps = {}
    for k in (1, 10, 100, 20_000):
        torch.manual_seed(0)
        gaps[k] = float((exact - model.iwae_bound(x, k, proposal="prior")).abs().mean())
    assert gaps[20_000] < 0.03, gaps
    assert gaps[20_000] < gaps[100] < gaps[10] < gaps[1], gaps


def test_iwae_bound_rises_with_k_and_stays_below_log_p_x():
    """Averaged over 40 seeded repetitions; the tolerance is 3 standard errors of the mean."""
    model, marginal = _ppca(exact_posterior=False)
    x = _ppca_data()
    exact = float(marginal.log_prob(x).mean())
    means, ses = [], []
    for k in (1, 5, 50, 500):
        values = []
        for rep in range(40):
            torch.manual_seed(rep)
            values.append(float(model.iwae_bound(x, k).mean()))
        t = torch.tensor(values)
        means.append(float(t.mean()))
        ses.append(float(t.std() / math.sqrt(len(t))))
    for i in range(len(means) - 1):
        assert means[i] <= means[i + 1] + 3 * math.hypot(ses[i], ses[i + 1]), (means, ses)
    assert means[-1] - means[0] > 0.1, means  # the bound does tighten
    for mean, se in zip(means, ses):
        assert mean <= exact + 3 * se, (means, exact)
    assert exact - means[-1] < exact - means[0]


@pytest.fixture(scope="module")
def trained_digits_vae():
    train, val = data.load("digits", "train"), data.load("digits", "val")
    torch.manual_seed(0)
    model = VAE(likelihood="logistic", num_levels=17, hidden=(64,), latent_dim=4)
    fit(model, train.x, val.x, max_steps=300, eval_every=100, seed=0, device="cpu", progress=False)
    return model


def test_elbo_lies_below_the_trained_models_iwae_estimate(trained_digits_vae):
    x = data.load("digits", "test").x[:64]
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = float(trained_digits_vae.elbo(x, num_samples=50)[0].mean())
    iwae_20 = float(trained_digits_vae.iwae_bound(x, 20).mean())
    best = float(trained_digits_vae.log_prob(x, k=1000).mean())
    assert elbo < iwae_20 < best, (elbo, iwae_20, best)


def test_iwae_chunks_give_the_same_bound_within_noise(trained_digits_vae):
    x = data.load("digits", "test").x[:32]
    torch.manual_seed(0)
    whole = trained_digits_vae.iwae_bound(x, 400)
    torch.manual_seed(1)
    chunked = trained_digits_vae.iwae_bound(x, 400, max_elements=5000)  # many small chunks
    assert (whole - chunked).abs().mean() < 0.3


# ---------------------------------------------------------------------------
# gradients: reparameterisation vs score function
# ---------------------------------------------------------------------------
def test_reparameterised_and_score_function_gradients_agree():
    """d/d(mu, logvar) of E_q[f(z)], f(z) = sum (z - a)^2, q = N(mu, diag(exp(logvar))).

    Exactly: E f = sum (mu - a)^2 + exp(logvar), so the gradient is (2 (mu - a), exp(logvar)).
    Both estimators are unbiased; each must lie within 5 standard errors of it, and of each other.
    """
    n = 200_000
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    mu = torch.tensor([0.1, 0.3, 1.0], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([-0.5, 0.2, 0.0], dtype=torch.float64, requires_grad=True)
    exact = torch.cat([2 * (mu - a), logvar.exp()]).detach()
    torch.manual_seed(0)

    # reparameterised: differentiate through z = mu + sigma * eps, one gradient per sample
    z = reparameterize(mu.expand(n, 3), logvar.expand(n, 3))
    f = ((z - a) ** 2).sum(-1)
    reparam = torch.cat(torch.autograd.grad(f.sum(), [mu, logvar])) / n
    eps = ((z - mu) * torch.exp(-0.5 * logvar)).detach()
    sigma = torch.exp(0.5 * logvar).detach()
    per_sample_r = torch.cat([2 * (z.detach() - a), (z.detach() - a) * sigma * eps], -1)
    se_r = per_sample_r.std(0) / math.sqrt(n)

    # score function: f(z) * d log q(z) / d(params), with z a plain (gradient-free) sample
    z_plain = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).sample((n,))
    assert z_plain.grad_fn is None  # plain sampling: no path from z back to mu or logvar
    f_plain = ((z_plain - a) ** 2).sum(-1)
    log_q = log_normal(z_plain, mu, logvar)
    score = torch.cat(torch.autograd.grad((f_plain * log_q).sum(), [mu, logvar])) / n
    e = (z_plain - mu.detach()) / sigma
    per_sample_s = f_plain[:, None] * torch.cat([e / sigma, 0.5 * (e**2 - 1)], -1)
    se_s = per_sample_s.std(0) / math.sqrt(n)

    assert torch.allclose(per_sample_r.mean(0), reparam, atol=1e-8)
    assert torch.allclose(per_sample_s.mean(0), score, atol=1e-8)
    assert ((reparam - exact).abs() < 5 * se_r).all(), (reparam, exact, se_r)
    assert ((score - exact).abs() < 5 * se_s).all(), (score, exact, se_s)
    assert ((reparam - score).abs() < 5 * torch.sqrt(se_r**2 + se_s**2)).all()
    assert (se_s > 3 * se_r).all(), "the score-function estimator should be the noisier one here"


def test_elbo_gradient_reaches_the_encoder():
    model = VAE(hidden=(16,), latent_dim=2)
    x = data.load("digits", "train").x[:8]
    model.loss(x).backward()
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------
# likelihoods
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("num_levels", [17, None])
def test_discretized_logistic_sums_to_one_over_the_levels(num_levels):
    lik = PixelLikelihood("logistic", num_levels)
    levels = lik.num_levels
    params = torch.tensor([[[0.3, math.log(0.05)], [0.02, math.log(0.3)], [0.97, math.log(0.001)]]],
                          dtype=torch.float64)  # (1, D=3, 2)
    values = torch.arange(levels, dtype=torch.float64)
    x = values if num_levels else values / (levels - 1)
    x = x[:, None].expand(levels, 3)
    logp = torch.stack([lik.log_prob(params[:, d:d + 1].expand(levels, 1, 2), x[:, d:d + 1])
                        for d in range(3)], -1)  # (levels, 3)
    assert torch.allclose(logp.exp().sum(0), torch.ones(3, dtype=torch.float64), atol=1e-4)


def test_categorical_likelihood_mean_and_log_prob():
    lik = PixelLikelihood("categorical", 3)
    params = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [1.0, 1e-9, 1e-9]]]))
    assert torch.allclose(lik.mean(params), torch.tensor([[1.3, 0.0]]), atol=1e-6)
    x = torch.tensor([[2, 0]])
    assert torch.allclose(lik.log_prob(params, x), torch.tensor([math.log(0.5)]), atol=1e-6)


def test_unknown_likelihood_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(likelihood="poisson")


# ---------------------------------------------------------------------------
# the model API, for every likelihood and its data
# ---------------------------------------------------------------------------
CASES = [("digits", None, "categorical"), ("digits", None, "logistic"), ("mnist5k-bin", None, "bernoulli"),
         ("mnist5k", None, "gaussian"), ("mnist5k", None, "logistic")]


@pytest.mark.parametrize("data_name, binarize, likelihood", CASES)
def test_vae_api_for_each_likelihood(data_name, binarize, likelihood, tmp_path):
    split = data.load(data_name, "test", binarize=binarize)
    x = split.x[:5]
    model = registry.build("vae", split.info(), likelihood=likelihood, hidden=(32,), latent_dim=3)
    model.initialize(data.load(data_name, "train").x[:200])
    elbo, reconstruction, kl = model.elbo(x)
    assert elbo.shape == reconstruction.shape == kl.shape == (5,)
    assert torch.isfinite(elbo).all()
    samples = model.sample(4)
    assert samples.shape == (4, *split.shape)
    if split.kind == "categorical":
        assert samples.dtype == torch.int64 and samples.min() >= 0 and samples.max() <= 16
    else:
        assert samples.is_floating_point()
    if likelihood in ("bernoulli", "logistic") and split.kind != "categorical":
        assert torch.isfinite(model.elbo(samples.float())[0]).all()  # its samples are valid data
    assert model.interpolate(x[0], x[1], steps=5).shape == (5, *split.shape)
    metrics = model.evaluate(x, k=20)
    assert set(metrics) == {"neg_elbo_nats", "recon_nats", "kl_nats", "nll_nats", "bpd"}
    assert metrics["nll_nats"] <= metrics["neg_elbo_nats"] + 1.0
    # checkpoints are config + state_dict and load with weights_only=True
    torch.save({"config": model.config, "state_dict": model.state_dict()}, tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    again = VAE(**ckpt["config"])
    again.load_state_dict(ckpt["state_dict"])
    model.eval(), again.eval()  # no dropout
    assert torch.equal(again.encode(x)[0], model.encode(x)[0])


def test_interpolation_ends_at_the_reconstructions(trained_digits_vae):
    x = data.load("digits", "test").x[:2]
    path = trained_digits_vae.interpolate(x[0], x[1], steps=6)
    recon = trained_digits_vae.reconstruct(x)
    assert torch.allclose(path[0], recon[0], atol=1e-5) and torch.allclose(path[-1], recon[1], atol=1e-5)
    assert not torch.allclose(path[2], recon[0], atol=1e-2)


def test_beta_weights_only_the_kl_term():
    x = data.load("digits", "train").x[:16]
    base = VAE(hidden=(16,), latent_dim=2)
    heavy = VAE(hidden=(16,), latent_dim=2, beta=4.0)
    heavy.load_state_dict(base.state_dict())
    torch.manual_seed(0)
    _, reconstruction, kl = base.elbo(x)
    torch.manual_seed(0)
    assert torch.allclose(heavy.loss(x), -(reconstruction - 4.0 * kl).mean(), atol=1e-4)
    torch.manual_seed(0)
    assert torch.allclose(base.loss(x), -(reconstruction - kl).mean(), atol=1e-4)


def test_wrong_data_is_rejected_with_a_helpful_message():
    model = VAE()  # digits: (1, 8, 8), 17 levels
    with pytest.raises(ValueError, match="shape"):
        model.elbo(torch.zeros(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="levels must lie in 0..16"):
        model.elbo(torch.full((2, 1, 8, 8), 17))
    grey = VAE(shape=(1, 28, 28), likelihood="logistic", num_levels=None)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        grey.elbo(torch.full((2, 1, 28, 28), 3.0))
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAE(beta=-1.0)
    with pytest.raises(ValueError, match="latent_dim"):
        model.decode(torch.zeros(2, 5))


def test_autoencoder_reports_reconstruction_metrics_only():
    split = data.load("digits", "test")
    model = registry.build("ae", split.info(), hidden=(32,), latent_dim=2)
    code = model.encode(split.x[:3])
    assert code.shape == (3, 2)
    assert model.reconstruct(split.x[:3]).shape == (3, 1, 8, 8)
    metrics = model.evaluate(split.x[:10])
    assert set(metrics) == {"recon_nats", "recon_mse"}
    assert metrics["recon_nats"] > 0 and 0 < metrics["recon_mse"] < 1
    assert model.sample(2).shape == (2, 1, 8, 8)


def test_registry_picks_the_likelihood_from_the_data():
    for name, kind in [("digits", "logistic"), ("mnist5k-bin", "bernoulli"), ("mnist5k", "gaussian")]:
        model = registry.build("vae", data.load(name, "val").info())
        assert model.likelihood.kind == kind, name
    assert set(LIKELIHOODS) == {"categorical", "bernoulli", "gaussian", "logistic"}


def test_ae_training_reduces_reconstruction_error():
    train, val = data.load("digits", "train"), data.load("digits", "val")
    torch.manual_seed(0)
    model = Autoencoder(hidden=(64,), latent_dim=4)
    model.initialize(train.x)
    before = model.evaluate(val.x)["recon_nats"]
    fit(model, train.x, val.x, max_steps=200, eval_every=100, seed=0, device="cpu", progress=False)
    assert model.evaluate(val.x)["recon_nats"] < before - 10
