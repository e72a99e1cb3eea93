"""The kinds of mistakes every checker must catch, one table for all assignments: gradients cut
(no_grad, .detach(), .data, .item()), noise that is not fresh on every call, inputs changed in
place, the dtype of the inputs lost, modules that do not behave as modules, training steps that
only go wrong from the second step on. Each wrong implementation must be rejected with the hint
that names its mistake; each assignment's worked solution must pass in float32 and float64."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dgm.checks import a03


# ---------------------------------------------------------------------------
# assignment 3
# ---------------------------------------------------------------------------
def reparam_private_seed(mu, logvar):
    torch.manual_seed(0)
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def reparam_private_generator(mu, logvar):
    gen = torch.Generator().manual_seed(1)
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, dtype=mu.dtype)


def reparam_numpy_noise(mu, logvar):
    eps = torch.from_numpy(np.random.randn(*mu.shape)).to(mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def reparam_float32(mu, logvar):
    return (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).float()


def reparam_in_place(mu, logvar):
    mu += torch.exp(0.5 * logvar) * torch.randn_like(mu)
    return mu


def reparam_returns_numpy(mu, logvar):
    return (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).detach().numpy()


def reparam_noise_shared_across_dimensions(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[0], 1, dtype=mu.dtype)


def kl_detached(mu, logvar):
    return (0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1)).detach()


def kl_under_no_grad(mu, logvar):
    with torch.no_grad():
        return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1)


def kl_through_data(mu, logvar):
    return 0.5 * (mu.data**2 + logvar.exp() - logvar - 1).sum(-1)


def kl_float32(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1).float()


def kl_in_place(mu, logvar):
    var = logvar.exp_()
    return 0.5 * (mu**2 + var - var.log() - 1).sum(-1)


def kl_eps_in_log(mu, logvar):
    var = logvar.exp()
    return 0.5 * (mu**2 + var - torch.log(var + 1e-3) - 1).sum(-1)


def _bce(x, logits):
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def _kl(mu, logvar):
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(-1)


def elbo_item(x, logits, mu, logvar):
    return (_bce(x, logits) + _kl(mu, logvar)).mean().item()


def elbo_kl_detached(x, logits, mu, logvar):
    return (_bce(x, logits) + _kl(mu, logvar).detach()).mean()


def elbo_no_grad(x, logits, mu, logvar):
    with torch.no_grad():
        return (_bce(x, logits) + _kl(mu, logvar)).mean()


def elbo_float32(x, logits, mu, logvar):
    return (_bce(x, logits) + _kl(mu, logvar)).mean().to(torch.float32)


def elbo_numpy_bce(x, logits, mu, logvar):
    p = 1 / (1 + np.exp(-logits.detach().numpy()))
    bce = -(x.numpy() * np.log(p) + (1 - x.numpy()) * np.log(1 - p)).sum(-1)
    return (torch.from_numpy(bce).to(logits.dtype) + _kl(mu, logvar)).mean()


def elbo_in_place_clamp(x, logits, mu, logvar):
    logvar.clamp_(-10, 10)
    return (_bce(x, logits) + _kl(mu, logvar)).mean()


FRESH = "fresh noise"
WRONG = [
    # (checker, wrong implementation, text of the failing case's name, text the report must contain)
    (a03.check_reparameterize, reparam_private_seed, FRESH, "two calls in a row gave the same z"),
    (a03.check_reparameterize, reparam_private_generator, FRESH, "two calls in a row gave the same z"),
    (a03.check_reparameterize, reparam_numpy_noise, FRESH, "re-seeding torch's generator does not reproduce"),
    (a03.check_reparameterize, reparam_float32, "float64", "z is float32 for float64 inputs"),
    (a03.check_reparameterize, reparam_in_place, "(2000, 3)", "in-place operation"),
    (a03.check_reparameterize, reparam_noise_shared_across_dimensions, "(2000, 3)", "every latent dimension got the same noise"),
    (a03.check_reparameterize, reparam_returns_numpy, "(2000, 3)", "should return a torch.Tensor"),
    (a03.check_kl, kl_detached, "mu = [[1, 2]]", "no gradient flows back to `mu`, `logvar`"),
    (a03.check_kl, kl_under_no_grad, "mu = [[1, 2]]", "no gradient flows back"),
    (a03.check_kl, kl_through_data, "mu = [[1, 2]]", "no gradient reaches `mu`"),
    (a03.check_kl, kl_float32, "float64", "wrong dtype: the inputs are float64"),
    (a03.check_kl, kl_in_place, "mu = 0", "changed its input `logvar` in place"),
    (a03.check_kl, kl_eps_in_log, "mu = 0", "values differ"),
    (a03.check_negative_elbo, elbo_item, "batch 4", "returned a Python number"),
    (a03.check_negative_elbo, elbo_kl_detached, "batch 4", "no gradient reaches `mu`"),
    (a03.check_negative_elbo, elbo_no_grad, "batch 4", "no gradient flows back"),
    (a03.check_negative_elbo, elbo_float32, "float64", "wrong dtype"),
    (a03.check_negative_elbo, elbo_numpy_bce, "batch 4", "no gradient reaches `logits`"),
    (a03.check_negative_elbo, elbo_in_place_clamp, "batch 4", "changed its input `logvar` in place"),
]


# ---------------------------------------------------------------------------
# assignment 4
# ---------------------------------------------------------------------------
from dgm.checks import a04  # noqa: E402
from dgm.gan import discriminator_loss as _d_loss, generator_loss as _g_loss  # noqa: E402


def d_loss_item(real_logits, fake_logits):
    return (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()).item()


def d_loss_fake_detached(real_logits, fake_logits):
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits.detach()).mean()


def d_loss_float32(real_logits, fake_logits):
    return (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()).float()


def d_loss_in_place(real_logits, fake_logits):
    real_logits.neg_()
    return F.softplus(real_logits).mean() + F.softplus(fake_logits).mean()


def d_loss_numpy(real_logits, fake_logits):
    value = np.logaddexp(0, -real_logits.detach().numpy()).mean() + np.logaddexp(0, fake_logits.detach().numpy()).mean()
    return torch.tensor(value, dtype=real_logits.dtype)


def g_loss_no_grad(fake_logits):
    with torch.no_grad():
        return F.softplus(-fake_logits).mean()


def g_loss_epsilon(fake_logits):
    return -torch.log(torch.sigmoid(fake_logits) + 1e-8).mean()


def g_loss_float32(fake_logits):
    return F.softplus(-fake_logits.float()).mean()


def step_without_zero_grad_d(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z)
    d_loss = _d_loss(discriminator(real), discriminator(fake.detach()))
    d_loss.backward()
    opt_d.step()
    g_loss = _g_loss(discriminator(fake), "nonsaturating")
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss, g_loss


def step_without_zero_grad_g(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z)
    d_loss = _d_loss(discriminator(real), discriminator(fake.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = _g_loss(discriminator(fake), "nonsaturating")
    g_loss.backward()
    opt_g.step()
    return d_loss, g_loss


def step_zero_grad_once_at_the_end(generator, discriminator, real, z, opt_d, opt_g):
    fake = generator(z)
    d_loss = _d_loss(discriminator(real), discriminator(fake.detach()))
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss = _g_loss(discriminator(fake), "nonsaturating")
    g_loss.backward()
    opt_g.step()
    opt_d.zero_grad()
    return d_loss, g_loss


WRONG += [
    (a04.check_discriminator_loss, d_loss_item, "all logits 0", "returned the Python number"),
    (a04.check_discriminator_loss, d_loss_fake_detached, "all logits 0", "no gradient reaches `fake_logits`"),
    (a04.check_discriminator_loss, d_loss_float32, "float64", "wrong dtype"),
    (a04.check_discriminator_loss, d_loss_in_place, "all logits 0", "changed its input `real_logits` in place"),
    (a04.check_discriminator_loss, d_loss_numpy, "all logits 0", "no gradient flows back"),
    (a04.check_generator_loss, g_loss_no_grad, "logits 0", "no gradient flows back to `fake_logits`"),
    (a04.check_generator_loss, g_loss_epsilon, "extreme logits", "softplus"),
    (a04.check_generator_loss, g_loss_float32, "float64", "wrong dtype"),
    (a04.check_gan_step, step_without_zero_grad_d, "stale gradients", "call opt_d.zero_grad()"),
    (a04.check_gan_step, step_without_zero_grad_g, "stale gradients", "step 1 of three"),
    (a04.check_gan_step, step_zero_grad_once_at_the_end, "stale gradients", "stale gradients add up"),
]


# ---------------------------------------------------------------------------
# assignment 5
# ---------------------------------------------------------------------------
from dgm.checks import a05  # noqa: E402


def _coupling(x, mask, net, bound, *, no_grad=False, dtype=None, in_place=False, detach_scale=False):
    shift, raw = net(x * mask).chunk(2, dim=1)
    log_scale = bound * torch.tanh(raw / bound)
    if detach_scale:
        log_scale = log_scale.detach()
    shift, log_scale = shift * (1 - mask), log_scale * (1 - mask)
    if in_place:
        x.mul_(log_scale.exp()).add_(shift)
        z = x
    else:
        z = x * log_scale.exp() + shift
    if dtype is not None:
        z, log_scale = z.to(dtype), log_scale.to(dtype)
    return z, log_scale.sum(1)


def forward_no_grad(x, mask, net, scale_bound):
    with torch.no_grad():
        return _coupling(x, mask, net, scale_bound)


def forward_log_scale_detached(x, mask, net, scale_bound):
    return _coupling(x, mask, net, scale_bound, detach_scale=True)


def forward_float64_always(x, mask, net, scale_bound):
    return _coupling(x, mask, net, scale_bound, dtype=torch.float64)


def forward_in_place(x, mask, net, scale_bound):
    return _coupling(x, mask, net, scale_bound, in_place=True)


def flow_log_prob_detached(x, masks, nets, scale_bound):
    total = 0
    for mask, net in zip(masks, nets):
        x, log_det = a05.reference_forward(x, mask, net, scale_bound)
        total = total + log_det
    z = x.detach()
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * np.log(2 * np.pi)) + total


def _uncoupling(z, mask, net, bound, *, no_grad=False, dtype=None):
    with torch.set_grad_enabled(not no_grad):
        shift, raw = net(z * mask).chunk(2, dim=1)
        log_scale = (bound * torch.tanh(raw / bound)) * (1 - mask)
        x = (z - shift * (1 - mask)) * (-log_scale).exp()
    if dtype is not None:
        x, log_scale = x.to(dtype), log_scale.to(dtype)
    return x, -log_scale.sum(1)


def inverse_no_grad(z, mask, net, scale_bound):
    return _uncoupling(z, mask, net, scale_bound, no_grad=True)


def inverse_float32_always(z, mask, net, scale_bound):
    return _uncoupling(z, mask, net, scale_bound, dtype=torch.float32)


WRONG += [
    (a05.check_coupling_inverse, inverse_no_grad, "mask=[1, 1, 0, 0]", "no gradient reaches the conditioner"),
    (a05.check_coupling_inverse, inverse_float32_always, "mask=[1, 1, 0, 0]", "keep the inputs' dtype"),
    (a05.check_coupling_forward, forward_no_grad, "mask=[1, 1, 0, 0]", "no gradient reaches the conditioner"),
    (a05.check_coupling_forward, forward_log_scale_detached, "mask=[1, 1, 0, 0]", "through log_det"),
    (a05.check_coupling_forward, forward_float64_always, "float32", "keep the inputs' dtype"),
    (a05.check_coupling_forward, forward_in_place, "mask=[1, 1, 0, 0]", "changed its input"),
    (a05.check_flow_log_prob, flow_log_prob_detached, "2 couplings", "gradient with respect to argument 1"),
]


# ---------------------------------------------------------------------------
# assignment 6
# ---------------------------------------------------------------------------
from dgm.checks import a06  # noqa: E402


def _q(x0, t, noise, betas):
    abar = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1)).to(x0.dtype)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def q_sample_float64_always(x0, t, noise, betas):
    abar = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise  # float64 schedule promotes a float32 x0


def q_sample_in_place(x0, t, noise, betas):
    abar = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1)).to(x0.dtype)
    return x0.mul_(abar.sqrt()).add_((1 - abar).sqrt() * noise)


def loss_item(eps_model, x0, t, noise, betas):
    return ((eps_model(_q(x0, t, noise, betas), t) - noise) ** 2).mean().item()


def loss_no_grad(eps_model, x0, t, noise, betas):
    with torch.no_grad():
        prediction = eps_model(_q(x0, t, noise, betas), t)
    return ((prediction - noise) ** 2).mean()


def loss_target_x0(eps_model, x0, t, noise, betas):
    return ((eps_model(_q(x0, t, noise, betas), t) - x0) ** 2).mean()


def loss_mse_sum(eps_model, x0, t, noise, betas):
    return F.mse_loss(eps_model(_q(x0, t, noise, betas), t), noise, reduction="sum")


def loss_private_t(eps_model, x0, t, noise, betas):
    t_random = torch.randint(0, len(betas), t.shape)  # draws its own t instead of the one it is given
    return ((eps_model(_q(x0, t_random, noise, betas), t_random) - noise) ** 2).mean()


def _ddpm(eps, x_t, t, betas, noise, *, std=True, beta_variance=False, wrap=False, noise_at_zero=False):
    abars = torch.cumprod(1 - betas, 0).to(x_t.dtype)
    beta = betas[t].to(x_t.dtype)
    abar = abars[t]
    abar_prev = abars[t - 1] if (t >= 1 or wrap) else torch.tensor(1.0, dtype=x_t.dtype)
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    mean = beta * abar_prev.sqrt() / (1 - abar) * x0 + (1 - abar_prev) * (1 - beta).sqrt() / (1 - abar) * x_t
    if t == 0 and not noise_at_zero:
        return mean
    variance = beta if beta_variance else (1 - abar_prev) / (1 - abar) * beta
    return mean + (variance.sqrt() if std else variance) * noise


WRONG += [
    (a06.check_q_sample, q_sample_float64_always, "float32", "wrong dtype"),
    (a06.check_q_sample, q_sample_in_place, "3 points", "changed its input `x0` in place"),
    (a06.check_noise_prediction_loss, loss_item, "points (4, 2)", "returned the Python number"),
    (a06.check_noise_prediction_loss, loss_no_grad, "right gradient", "no gradient reaches the network"),
    (a06.check_noise_prediction_loss, loss_target_x0, "points (4, 2)", "compared with x0 instead of the noise"),
    (a06.check_noise_prediction_loss, loss_mse_sum, "points (4, 2)", "a sum instead of a mean"),
    (a06.check_noise_prediction_loss, loss_private_t, "points (4, 2)", "values differ"),
    (a06.check_ddpm_step, lambda *a: _ddpm(*a, std=False), "t = 500", "the variance used as the standard deviation"),
    (a06.check_ddpm_step, lambda *a: _ddpm(*a, beta_variance=True), "t = 500", "beta_t instead of the posterior"),
    (a06.check_ddpm_step, lambda *a: _ddpm(*a, wrap=True), "t = 0", "read as abar[-1]"),
    (a06.check_ddpm_step, lambda *a: _ddpm(*a, beta_variance=True, noise_at_zero=True), "t = 500", "and noise added at t = 0 too"),
]

# ---------------------------------------------------------------------------
# assignment 2
# ---------------------------------------------------------------------------
from torch import nn  # noqa: E402

from dgm.autoregressive import MaskedConv2d as _PackageLayer  # noqa: E402
from dgm.checks import a02  # noqa: E402


def _mask(kernel_size, mask_type, in_channels, out_channels):
    m = torch.ones(out_channels, in_channels, kernel_size, kernel_size)
    c = kernel_size // 2
    m[:, :, c, c + (mask_type == "B"):] = 0
    m[:, :, c + 1:] = 0
    return m


class LayerMaskAsPlainAttribute(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask = _mask(kernel_size, mask_type, in_channels, out_channels)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class LayerBiasFrozenByData(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", _mask(kernel_size, mask_type, in_channels, out_channels))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias.data, padding=self.padding)


def pixelcnn_sigmoid_output(hidden_channels, num_layers, kernel_size):
    return nn.Sequential(*a02.reference_pixelcnn(hidden_channels, num_layers, kernel_size), nn.Sigmoid())


def pixelcnn_fixed_width(hidden_channels, num_layers, kernel_size):
    layers = [_PackageLayer(1, 16, kernel_size, "A"), nn.ReLU()]
    for _ in range(num_layers - 1):
        layers += [_PackageLayer(16, 16, kernel_size, "B"), nn.ReLU()]
    return nn.Sequential(*layers, _PackageLayer(16, 1, 1, "B"))


def pixelcnn_no_relu(hidden_channels, num_layers, kernel_size):
    layers = [_PackageLayer(1, hidden_channels, kernel_size, "A")]
    for _ in range(num_layers - 1):
        layers += [_PackageLayer(hidden_channels, hidden_channels, kernel_size, "B")]
    return nn.Sequential(*layers, _PackageLayer(hidden_channels, 1, 1, "B"))


def nll_item(net, x):
    return F.binary_cross_entropy_with_logits(net(x), x, reduction="none").sum(1).mean().item()


def nll_per_pixel(net, x):
    return F.binary_cross_entropy_with_logits(net(x), x)


def nll_log_sigmoid(net, x):
    p = torch.sigmoid(net(x))
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1).mean()


def nll_no_grad(net, x):
    with torch.no_grad():
        logits = net(x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1).mean()


def nll_float32(net, x):
    return F.binary_cross_entropy_with_logits(net(x), x, reduction="none").sum(1).mean().float()


def sample_all_at_once(net, n, order, generator):
    x = torch.zeros(n, len(order))
    return torch.bernoulli(torch.sigmoid(net(x)), generator=generator)


def sample_natural_order(net, n, order, generator):
    x = torch.zeros(n, len(order))
    for i in range(len(order)):
        x[:, i] = torch.bernoulli(torch.sigmoid(net(x)[:, i]), generator=generator)
    return x


def sample_argmax(net, n, order, generator):
    x = torch.zeros(n, len(order))
    for i in order:
        x[:, i] = (net(x)[:, i] > 0).float()
    return x


def sample_private_seed(net, n, order, generator):
    torch.manual_seed(0)
    x = torch.zeros(n, len(order))
    for i in order:
        x[:, i] = torch.bernoulli(torch.sigmoid(net(x)[:, i]))
    return x


def sample_ignores_generator(net, n, order, generator):
    x = torch.zeros(n, len(order))
    for i in order:
        x[:, i] = torch.bernoulli(torch.sigmoid(net(x)[:, i]))
    return x


def sample_probabilities(net, n, order, generator):
    x = torch.zeros(n, len(order))
    for i in order:
        x[:, i] = torch.sigmoid(net(x)[:, i])
    return x


WRONG += [
    (a02.check_masked_conv2d, LayerMaskAsPlainAttribute, "MaskedConv2d(1, 4, 3, 'A')", "register_buffer('mask'"),
    (a02.check_masked_conv2d, LayerBiasFrozenByData, "MaskedConv2d(1, 4, 3, 'A')", "parameter `bias` of the layer gets no gradient"),
    (a02.check_pixelcnn, pixelcnn_sigmoid_output, "pixelcnn(8, 2, 3)", "the stack ends with Sigmoid"),
    (a02.check_pixelcnn, pixelcnn_fixed_width, "pixelcnn(8, 2, 3)", "every k x k layer should have hidden_channels = 8"),
    (a02.check_pixelcnn, pixelcnn_no_relu, "pixelcnn(8, 2, 3)", "put an nn.ReLU() after every"),
    (a02.check_autoregressive_nll, nll_item, "6 pixels", "returned the Python number"),
    (a02.check_autoregressive_nll, nll_per_pixel, "6 pixels", "averaged over the pixels too"),
    (a02.check_autoregressive_nll, nll_log_sigmoid, "very confident", "NaN"),
    (a02.check_autoregressive_nll, nll_no_grad, "right gradient", "no gradient reaches the network"),
    (a02.check_autoregressive_nll, nll_float32, "float64", "wrong dtype"),
    (a02.check_sample_autoregressive, sample_all_at_once, "4000 samples", "one pixel at a time in the given order"),
    (a02.check_sample_autoregressive, sample_natural_order, "4000 samples", "in another order"),
    (a02.check_sample_autoregressive, sample_argmax, "4000 samples", "chosen deterministically"),
    (a02.check_sample_autoregressive, sample_private_seed, "generator argument", "do not follow the `generator`"),
    (a02.check_sample_autoregressive, sample_ignores_generator, "generator argument", "do not follow the `generator`"),
    (a02.check_sample_autoregressive, sample_probabilities, "4000 samples", "should be 0s and 1s"),
]

# ---------------------------------------------------------------------------
# assignment 1
# ---------------------------------------------------------------------------
from dgm.checks import a01  # noqa: E402

_CACHE = {}


def kl_mc_private_seed(sample_p, log_p, log_q, n):
    torch.manual_seed(1234)  # "so the answer is reproducible"
    x = sample_p(n)
    d = log_p(x) - log_q(x)
    return d.mean(), d.std() / n**0.5


def kl_between_cached_samples(p, q, n):
    key = (id(p), n)
    if key not in _CACHE:  # draws once and reuses the samples on every later call
        _CACHE[key] = p.sample((n,))
    x = _CACHE[key]
    d = p.log_prob(x) - q.log_prob(x)
    return d.mean(), d.std() / n**0.5


def nll_clamps_in_place(probs, x):
    probs.clamp_(min=1e-12)
    flat = x.flatten(1)
    picked = probs[torch.arange(flat.shape[1]), flat]
    return float(-picked.log().sum(1).mean())


WRONG += [
    (a01.check_kl_monte_carlo, kl_mc_private_seed, "fresh samples", "two calls in a row gave the same estimate"),
    (a01.check_kl_between, kl_between_cached_samples, "fresh samples", "two calls in a row gave the same estimate"),
    (a01.check_nll_nats, nll_clamps_in_place, "tiny", "changed its input `probs` in place"),
]

# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("checker, wrong, case, text", WRONG,
                         ids=[f"{w[0].__name__}-{w[1].__name__}-{i}" for i, w in enumerate(WRONG)])
def test_checker_rejects_each_kind_of_mistake(checker, wrong, case, text):
    result = checker(wrong, strict=False)
    assert not result.passed, f"{wrong.__name__} was accepted"
    report = str(result)
    assert case in result.failures[0].case, report
    assert text in report, report
