"""Chapter 4: the GAN losses against the theory (optimal discriminator, -log 4 + 2 JSD,
saturating vs non-saturating gradients), the models' API, and the trainer's labelled batches."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from dgm import gan, registry
from dgm.base import GenerativeModel, lr_schedule_factor
from dgm.train import fit

# ---- the theory in 1-D -------------------------------------------------------
# p_data = N(0, 1), p_g = N(1.5, 0.7^2): two known densities, overlapping but different
P_DATA = stats.norm(0.0, 1.0)
P_G = stats.norm(1.5, 0.7)


def optimal_discriminator(x: np.ndarray) -> np.ndarray:
    return P_DATA.pdf(x) / (P_DATA.pdf(x) + P_G.pdf(x))


def jsd_by_quadrature() -> float:
    """JSD(p_data || p_g) in nats by numerical integration (independent of any sampling)."""
    def kl_to_mixture(p):
        def integrand(x):
            m = 0.5 * (P_DATA.pdf(x) + P_G.pdf(x))
            return p.pdf(x) * math.log(p.pdf(x) / m) if p.pdf(x) > 0 else 0.0
        return integrate.quad(integrand, -12, 12, limit=200)[0]
    return 0.5 * kl_to_mixture(P_DATA) + 0.5 * kl_to_mixture(P_G)


def test_value_at_optimal_discriminator_is_minus_log4_plus_2jsd():
    rng = np.random.default_rng(0)
    n = 400_000
    x_data, x_g = P_DATA.rvs(n, random_state=rng), P_G.rvs(n, random_state=rng)
    value = np.log(optimal_discriminator(x_data)).mean() + np.log(1 - optimal_discriminator(x_g)).mean()
    jsd = jsd_by_quadrature()
    assert 0.05 < jsd < math.log(2)  # the two densities really differ (else the test proves nothing)
    # Monte Carlo standard error at n = 400k is ~1e-3
    assert value == pytest.approx(-math.log(4) + 2 * jsd, abs=5e-3)


def test_trained_discriminator_approaches_the_optimal_one():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    x_data = torch.tensor(P_DATA.rvs(20_000, random_state=rng), dtype=torch.float32)[:, None]
    x_g = torch.tensor(P_G.rvs(20_000, random_state=rng), dtype=torch.float32)[:, None]
    disc = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for step in range(600):
        idx = torch.randint(0, 20_000, (512,))
        loss = gan.discriminator_loss(disc(x_data[idx]).squeeze(-1), disc(x_g[idx]).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = np.linspace(-1.5, 2.5, 41)
    with torch.no_grad():
        learned = torch.sigmoid(disc(torch.tensor(grid, dtype=torch.float32)[:, None])).squeeze(-1).numpy()
    assert np.abs(learned - optimal_discriminator(grid)).max() < 0.05
    # its value (the negated loss on all samples) is at most, and close to, -log 4 + 2 JSD
    with torch.no_grad():
        value = -float(gan.discriminator_loss(disc(x_data).squeeze(-1), disc(x_g).squeeze(-1)))
    target = -math.log(4) + 2 * jsd_by_quadrature()
    assert target - 0.02 < value < target + 0.01  # +0.01: Monte Carlo noise of 20k samples


def test_saturating_gradient_vanishes_when_d_rejects_fakes_nonsaturating_does_not():
    # D is confident the fakes are fake: D(G(z)) = sigmoid(-8) ~ 3e-4
    for kind, expect_small in (("saturating", True), ("nonsaturating", False)):
        logits = torch.full((64,), -8.0, requires_grad=True)
        gan.generator_loss(logits, kind).backward()
        grad = logits.grad.abs().sum().item()  # d loss / d logit summed over the batch
        if expect_small:
            assert grad < 1e-3, f"{kind}: gradient {grad} should be ~sigmoid(-8)"
        else:
            assert grad > 0.99, f"{kind}: gradient {grad} should be ~1 - sigmoid(-8)"
    # where D is fooled (D(G(z)) ~ 1) it is the other way round: both losses have the same fixed points
    logits = torch.full((64,), 8.0, requires_grad=True)
    gan.generator_loss(logits, "saturating").backward()
    assert logits.grad.abs().sum() > 0.99


def test_losses_have_the_right_signs():
    real, fake = torch.tensor([5.0, 5.0]), torch.tensor([-5.0, -5.0])
    # a good discriminator has a small loss, a reversed one a large loss, in both games
    for game in ("log", "classification"):
        assert gan.discriminator_loss(real, fake, game) < gan.discriminator_loss(fake, real, game)
    # the generator's losses fall as D is fooled more
    for kind in ("saturating", "nonsaturating", "classification"):
        assert gan.generator_loss(torch.tensor([2.0]), kind) < gan.generator_loss(torch.tensor([-2.0]), kind)
    assert float(gan.discriminator_loss(torch.zeros(3), torch.zeros(3), "classification")) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind must be"):
        gan.generator_loss(real, "hinge")


def test_feature_matching_loss_is_zero_for_equal_means_and_only_moves_the_fake_side():
    a = torch.randn(50, 4)
    assert float(gan.feature_matching_loss(a, a[torch.randperm(50)])) == pytest.approx(0.0, abs=1e-10)
    real = torch.randn(8, 3, requires_grad=True)
    fake = torch.randn(8, 3, requires_grad=True)
    gan.feature_matching_loss(real, fake).backward()
    assert real.grad is None and fake.grad.abs().sum() > 0


# ---- the models --------------------------------------------------------------
@pytest.mark.parametrize("loss", gan.GENERATOR_LOSSES)
def test_gan_trains_with_every_loss_and_keeps_the_api(loss):
    x = torch.randn(512, 2)
    model = gan.GAN(hidden=16, depth=2, loss=loss, pack=2, r1=0.1, latent_components=4, lr_schedule="halving:0.5", ema=0.9)
    before = [p.detach().clone() for p in model.generator.parameters()]
    # no validation set: the last weights stay (with one, the best evaluation's would, maybe the first)
    history = fit(model, x, None, max_steps=6, batch_size=64, eval_every=3, progress=False, device="cpu")
    assert set(history.train[-1][1]) == {"d_loss", "g_loss"}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))
    assert model.sample(7).shape == (7, 2)
    assert torch.isfinite(model.loss(x[:64]))  # D's loss on packed, standardised points
    # a checkpoint is config + state_dict, loadable with weights_only
    clone = gan.GAN(**model.config)
    clone.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    a = model.sample(5)
    torch.manual_seed(0)
    assert torch.equal(a, clone.sample(5))


def test_frozen_parameters_pass_gradients_through_but_take_none():
    layer = nn.Linear(3, 1)
    x = torch.randn(5, 3, requires_grad=True)
    with gan.frozen(layer.parameters()):
        out = layer(x).sum()
    out.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G still learns through D
    assert all(p.grad is None for p in layer.parameters())  # D's weights got nothing
    assert all(p.requires_grad for p in layer.parameters())  # and train again afterwards
    with pytest.raises(RuntimeError):
        with gan.frozen(layer.parameters()):
            raise RuntimeError("a failing G step")
    assert all(p.requires_grad for p in layer.parameters())


def test_gan_validation_score_is_the_parzen_nll_at_the_best_bandwidth():
    """Against scikit-learn's KernelDensity: the same Gaussian kernels, in the data's units."""
    from sklearn.neighbors import KernelDensity

    torch.manual_seed(0)
    model = gan.GAN(hidden=8, depth=1, pack=1)
    model.initialize(torch.randn(500, 2) * 3 + 1)  # data_scale about 3: the bandwidths are in its units
    samples = torch.randn(model.parzen_samples, 2) * 2
    model.sample = lambda n, averaged=True: samples[:n]  # the score reads exactly these points
    held_out = torch.randn(300, 2) * 2
    reference = min(
        -KernelDensity(bandwidth=h * float(model.data_scale)).fit(samples.double().numpy())
        .score_samples(held_out.double().numpy()).mean()
        for h in model.parzen_bandwidths)
    assert model.validation_score(held_out) == pytest.approx(reference, abs=1e-4)
    with pytest.raises(ValueError, match="shape"):
        model.validation_score(torch.randn(10, 3))


def test_gan_validation_score_prefers_all_modes_and_sharp_ones():
    """A dropped mode and samples between the modes both cost held-out likelihood."""
    modes = torch.tensor([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])

    def score(sample_modes, spread):
        torch.manual_seed(1)
        model = gan.GAN(hidden=8, depth=1, pack=1)
        model.initialize(modes.repeat(100, 1))
        n = gan.GAN.parzen_samples
        samples = sample_modes[torch.arange(n) % len(sample_modes)] + spread * torch.randn(n, 2)
        model.sample = lambda k, averaged=True: samples[:k]
        held_out = modes[torch.arange(400) % 4] + 0.05 * torch.randn(400, 2)
        return model.validation_score(held_out)

    all_modes = score(modes, 0.05)
    assert all_modes < score(modes[:3], 0.05) - 1  # a missing mode: its points are far from every sample
    assert all_modes < score(modes, 0.5) - 1  # blurred modes
    assert all_modes < score(torch.cat([modes, torch.zeros(4, 2)]), 0.05)  # half the samples between modes


def test_gan_validation_score_repeats_and_leaves_trainings_random_stream_alone():
    torch.manual_seed(0)
    model = gan.GAN(hidden=8, depth=1, pack=1, latent_components=3)
    held_out = torch.randn(50, 2)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first = model.validation_score(held_out)
    assert torch.equal(torch.rand(3), expected)
    assert model.validation_score(held_out) == first  # the same latent draws at every evaluation


def test_fit_keeps_the_gans_best_weights_by_the_parzen_score():
    torch.manual_seed(0)
    model = gan.GAN(hidden=16, depth=2, pack=1, latent_components=4, ema=0.9)
    x = torch.randn(600, 2) * torch.tensor([1.0, 0.2])
    history = fit(model, x[:500], x[500:], max_steps=40, batch_size=64, eval_every=5, progress=False, device="cpu")
    scores = dict(history.val)
    assert sorted(scores) == list(range(0, 41, 5)) and history.best_val == min(scores.values())
    assert history.best_step == min(scores, key=scores.get)
    assert history.best_step < 40  # else the check below could not tell best weights from last ones
    # the weights left in the model, with their averages, are the best evaluation's
    assert model.validation_score(x[500:]) == pytest.approx(history.best_val, abs=1e-6)


def test_weight_average_follows_the_generator_and_is_what_sample_uses():
    torch.manual_seed(0)
    model = gan.GAN(hidden=16, depth=2, pack=1, latent_components=3, ema=0.5)
    live = lambda: list(model.sampler.parameters())  # noqa: E731  G and the latent mixture
    averages = lambda: list(model.ema.module.parameters())  # noqa: E731  their averages, in the same order
    start = [p.detach().clone() for p in live()]
    assert all(torch.equal(a, p) for a, p in zip(averages(), start))  # starts at G's weights
    fit(model, torch.randn(256, 2), None, max_steps=20, batch_size=64, progress=False, device="cpu")
    raw, averaged = live(), averages()
    assert len(averaged) == len(raw) == len(model.generator_parameters()) and int(model.ema.n_averaged) == 21
    # the average moved with training, but lags behind: it differs from both the start and the last weights
    assert any(not torch.equal(a, s) for a, s in zip(averaged, start))
    assert any(not torch.allclose(a, p) for a, p in zip(averaged, raw))
    # one update by hand: avg <- beta avg + (1 - beta) w with beta = min(0.5, 21 / 30) after 20 updates
    expected = [a.detach() + 0.5 * (p.detach() - a.detach()) for a, p in zip(averaged, raw)]
    model.ema.update_parameters(model.sampler)
    assert all(torch.allclose(a, e) for a, e in zip(averages(), expected))
    # sample() uses the averaged weights; sample(averaged=False) the raw ones, which it leaves unchanged
    z_seed = 3
    torch.manual_seed(z_seed)
    from_average = model.sample(50)
    torch.manual_seed(z_seed)
    from_raw = model.sample(50, averaged=False)
    assert not torch.allclose(from_average, from_raw)
    assert all(torch.equal(p, q) for p, q in zip(raw, live()))
    torch.manual_seed(z_seed)
    assert torch.equal(model.generate(model.latent(50, model.ema.module), model.ema.module), from_average)
    # the average is saved with the model: a clone from config + state_dict samples the same points
    clone = gan.GAN(**model.config)
    clone.load_state_dict(model.state_dict())
    torch.manual_seed(z_seed)
    assert torch.equal(clone.sample(50), from_average)
    # and it is not counted as parameters twice
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in averaged)


def test_without_averaging_sample_uses_the_raw_generator():
    model = gan.GAN(hidden=8, depth=1, ema=0.0)
    assert "ema" not in dict(model.named_children())
    torch.manual_seed(1)
    a = model.sample(10)
    torch.manual_seed(1)
    assert torch.equal(a, model.sample(10, averaged=False))


def test_discriminator_step_does_not_touch_the_generator():
    model = gan.GAN(hidden=16, depth=2, pack=1)
    opt_d, opt_g = model.configure_optimizers(1e-2)
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    # run only the D half: a G optimizer that does nothing shows what the D step alone did
    model.training_step(torch.randn(64, 2), [opt_d, torch.optim.SGD(model.generator.parameters(), lr=0.0)])
    assert all(torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))


_IMAGES = torch.rand(16, 1, 8, 8)


@pytest.mark.parametrize("make,batch", [
    pytest.param(lambda: gan.GAN(hidden=16, depth=2, pack=1), torch.randn(64, 2), id="gan"),
    pytest.param(lambda: gan.DCGAN(shape=(1, 8, 8), latent_dim=8, channels=4), _IMAGES, id="dcgan"),
    pytest.param(lambda: gan.ConditionalGAN(shape=(1, 8, 8), latent_dim=8, channels=4, aux_weight=1.0),
                 (_IMAGES, torch.randint(0, 10, (16,))), id="cgan"),
    pytest.param(lambda: gan.CycleGAN(shape=(1, 8, 8), channels=4, disc_channels=4), _IMAGES, id="cyclegan"),
])
def test_generator_step_leaves_the_discriminators_gradients_alone(make, batch):
    """D's weights are frozen during G's step: after a full step D's ``.grad`` is still what its own step
    computed (without ``frozen``, G's backward would add to it, and spend time doing so)."""
    torch.manual_seed(0)
    model = make()
    opt_d, opt_g = model.configure_optimizers(1e-3)
    seen = {}
    d_step = opt_d.step

    def step_and_remember(*args, **kwargs):
        seen["grads"] = [p.grad.clone() for p in model.discriminator_parameters() if p.grad is not None]
        return d_step(*args, **kwargs)

    opt_d.step = step_and_remember
    model.training_step(batch, [opt_d, opt_g])
    after = [p.grad for p in model.discriminator_parameters() if p.grad is not None]
    assert seen["grads"] and len(after) == len(seen["grads"])
    assert all(torch.equal(a, b) for a, b in zip(seen["grads"], after))
    assert all(p.requires_grad for p in model.discriminator_parameters())


def test_packing_puts_pack_samples_in_one_row():
    model = gan.GAN(hidden=8, depth=1, pack=3)
    x = torch.arange(20.0).view(10, 2)
    packed = model.packed(x)
    assert packed.shape == (3, 6)  # 10 samples -> 3 full packs of 3, one left over
    assert torch.equal(packed[1], torch.tensor([6.0, 7, 8, 9, 10, 11]))


def _rates_of_each_step(model, steps, x, lr=0.01):
    """Every optimizer group's learning rate at each step of a ``fit`` of ``steps`` steps."""
    rates, step_once = [], model.training_step

    def recording(batch, optimizers):
        rates.append([group["lr"] for opt in optimizers for group in opt.param_groups])
        return step_once(batch, optimizers)

    model.training_step = recording
    fit(model, x, None, max_steps=steps, batch_size=64, lr=lr, progress=False, device="cpu")
    del model.training_step
    return rates


def test_gan_learning_rates_follow_the_half_cosine_over_each_fit():
    x = torch.randn(256, 2)
    model = gan.GAN(hidden=8, depth=1, pack=1, lr_schedule="cosine")
    rates = _rates_of_each_step(model, 4, x) + _rates_of_each_step(model, 6, x)  # a second fit starts again
    expected = [0.01 * lr_schedule_factor("cosine", k / 4) for k in range(4)]
    expected += [0.01 * lr_schedule_factor("cosine", k / 6) for k in range(6)]
    assert [r[0] for r in rates] == pytest.approx(expected)
    assert all(r == pytest.approx([r[0]] * len(r)) for r in rates)  # D and G together


def test_latent_mixture_learns_at_its_own_rate_and_follows_the_schedule():
    model = gan.GAN(hidden=8, depth=1, pack=1, latent_components=4, latent_lr=3.0, lr_schedule="cosine")
    opt_d, opt_g = model.configure_optimizers(0.01)
    assert [g["lr"] for g in opt_d.param_groups] == [0.01]
    assert [g["lr"] for g in opt_g.param_groups] == [0.01, 0.03]
    mixture = {id(model.latent_means), id(model.latent_log_scales)}
    assert {id(p) for p in opt_g.param_groups[1]["params"]} == mixture
    assert not mixture & {id(p) for p in opt_g.param_groups[0]["params"]}
    # every G parameter is in exactly one group
    assert sum(len(g["params"]) for g in opt_g.param_groups) == len(model.generator_parameters())
    rates = _rates_of_each_step(model, 4, torch.randn(256, 2))
    factor = 0.5 * (1 + math.cos(math.pi * 2 / 4))  # the rates of the third step
    assert rates[2] == pytest.approx([0.01 * factor, 0.01 * factor, 0.03 * factor])  # D, G, the mixture
    # without a mixture there is nothing to give a rate: one group
    plain = gan.GAN(hidden=8, depth=1, pack=1, latent_lr=3.0)
    assert [g["lr"] for g in plain.configure_optimizers(0.01)[1].param_groups] == [0.01]


def test_lazy_r1_applies_the_penalty_every_nth_step_with_n_times_the_weight(monkeypatch):
    calls = []

    def constant_penalty(discriminator, real):
        calls.append(len(real))
        return torch.tensor(1.0)  # no gradient: both models' weights stay equal, only d_loss differs

    monkeypatch.setattr(gan, "r1_penalty", constant_penalty)
    x = torch.randn(64, 2)
    d_losses = {}
    for r1 in (0.0, 0.2):
        torch.manual_seed(0)
        model = gan.GAN(hidden=8, depth=1, pack=1, r1=r1, r1_every=4)
        optimizers = model.configure_optimizers(0.01)
        d_losses[r1] = [float(model.training_step(x, optimizers)["d_loss"]) for _ in range(9)]
    assert len(calls) == 3  # steps 0, 4 and 8 of the r1=0.2 run; none with r1=0
    extra = [b - a for a, b in zip(d_losses[0.0], d_losses[0.2])]
    expected = [0.5 * 0.2 * 4 if k % 4 == 0 else 0.0 for k in range(9)]
    assert extra == pytest.approx(expected, abs=1e-6)


def test_r1_can_fade_with_the_learning_rate(monkeypatch):
    """``r1_follows_lr``: the penalty's weight at step k is ``r1`` times the run's schedule factor."""
    monkeypatch.setattr(gan, "r1_penalty", lambda discriminator, real: torch.tensor(1.0))
    x = torch.randn(64, 2)
    d_losses = {}
    for r1, follows in ((0.0, False), (0.2, False), (0.2, True)):
        torch.manual_seed(0)
        model = gan.GAN(hidden=8, depth=1, pack=1, r1=r1, lr_schedule="cosine", r1_follows_lr=follows)
        losses, step_once = [], model.training_step
        model.training_step = lambda batch, opts: losses.append(step_once(batch, opts)) or losses[-1]
        fit(model, x, None, max_steps=8, batch_size=64, lr=0.01, progress=False, device="cpu")
        d_losses[r1, follows] = [float(values["d_loss"]) for values in losses]
    for follows in (False, True):
        extra = [b - a for a, b in zip(d_losses[0.0, False], d_losses[0.2, follows])]
        factors = [lr_schedule_factor("cosine", k / 8) if follows else 1.0 for k in range(8)]
        assert extra == pytest.approx([0.5 * 0.2 * f for f in factors], abs=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"loss": "wasserstein"}, "loss must be one of"),
    ({"latent_lr": 0.0}, "latent_lr"),
    ({"r1_every": 0}, "r1_every must be a positive integer"),
    ({"lr_schedule": "linear"}, "lr_schedule must be"),
    ({"pack": 0}, "pack must be a positive integer"),
    ({"r1": -1.0}, "r1"),
    ({"latent_components": -2}, "latent_components"),
    ({"ema": 1.0}, "ema"),
    ({"latent_scale": 0.0}, "latent_scale"),
    ({"r1_follows_lr": 1}, "r1_follows_lr must be True or False"),
])
def test_gan_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gan.GAN(**kwargs)


def test_gan_rejects_images():
    model = gan.GAN(hidden=8, depth=1)
    with pytest.raises(ValueError, match="points of shape"):
        model.training_step(torch.zeros(8, 1, 8, 8), model.configure_optimizers(1e-3))


@pytest.mark.parametrize("shape,levels", [((1, 28, 28), None), ((1, 8, 8), 17)])
def test_dcgan_samples_in_the_data_format(shape, levels):
    model = gan.DCGAN(shape=shape, num_levels=levels, latent_dim=8, channels=4)
    x = torch.rand(32, *shape) if levels is None else torch.randint(0, levels, (32, *shape))
    fit(model, x, None, max_steps=2, batch_size=16, progress=False, device="cpu")
    samples = model.sample(6)
    assert samples.shape == (6, *shape)
    if levels is None:
        assert samples.min() >= 0 and samples.max() <= 1
    else:
        assert samples.dtype == torch.int64 and samples.min() >= 0 and samples.max() <= levels - 1


def test_conditional_gan_uses_labels_from_the_trainer():
    model = gan.ConditionalGAN(shape=(1, 8, 8), num_levels=17, latent_dim=8, channels=4)
    x, y = torch.randint(0, 17, (40, 1, 8, 8)), torch.randint(0, 10, (40,))
    history = fit(model, (x, y), (x[:10], y[:10]), max_steps=3, batch_size=16, progress=False, device="cpu")
    assert history.steps == 3
    assert model.sample(4, labels=torch.tensor([3, 3, 1, 0])).shape == (4, 1, 8, 8)
    assert model.num_classes == 10
    with pytest.raises(ValueError, match="one label per sample"):
        model.sample(3, labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="labels must lie in"):
        model.sample(1, labels=torch.tensor([10]))
    with pytest.raises(ValueError, match=r"\(images, labels\) pairs"):
        model.training_step(x[:8], model.configure_optimizers(1e-3))


def test_conditional_gan_generator_depends_on_the_label():
    model = gan.ConditionalGAN(shape=(1, 8, 8), latent_dim=8, channels=4).eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        a = model.generate(z, torch.tensor([0, 0]))
        b = model.generate(z, torch.tensor([5, 5]))
    assert not torch.allclose(a, b)


def test_acgan_auxiliary_classifier_learns_labels_and_steers_the_generator():
    torch.manual_seed(0)
    model = gan.ConditionalGAN(shape=(1, 8, 8), latent_dim=8, channels=4, aux_weight=10.0)
    opt_d, opt_g = model.configure_optimizers(1e-3)
    # the classifier's parameters are trained by D's optimizer, never by G's
    aux_ids = {id(p) for p in model.auxiliary.parameters()}
    assert aux_ids <= {id(p) for group in opt_d.param_groups for p in group["params"]}
    assert not aux_ids & {id(p) for group in opt_g.param_groups for p in group["params"]}
    assert model.class_logits(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    # G's gradient differs from the plain conditional GAN's only through the auxiliary term
    plain = gan.ConditionalGAN(shape=(1, 8, 8), latent_dim=8, channels=4)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("auxiliary.")})
    z, y = torch.randn(6, 8), torch.randint(0, 10, (6,))
    grads = []
    for m, aux in ((model, True), (plain, False)):
        fake = m.generate(z, y)
        g_loss = gan.generator_loss(m.critic(fake, y))
        if aux:
            g_loss = g_loss + 10.0 * torch.nn.functional.cross_entropy(m.class_logits(fake), y)
        grads.append(torch.autograd.grad(g_loss, list(m.generator.parameters()))[0])
    assert not torch.allclose(grads[0], grads[1])
    # on separable "digits" (class k = a bright pixel k) the classifier learns the labels from real images
    y = torch.arange(10).repeat(20)
    x = torch.zeros(200, 1, 8, 8)
    x.view(200, -1)[torch.arange(200), y * 6] = 1.0
    for _ in range(150):
        logs = model.training_step((x, y), [opt_d, opt_g])
    assert {"aux_real", "aux_fake"} <= set(logs)
    accuracy = (model.class_logits(x).argmax(1) == y).float().mean()
    assert accuracy > 0.9, f"auxiliary classifier accuracy {accuracy:.2f} on separable classes"
    with pytest.raises(ValueError, match="aux_weight"):
        gan.ConditionalGAN(shape=(1, 8, 8), aux_weight=-1.0)
    with pytest.raises(ValueError, match="no auxiliary classifier"):
        plain.class_logits(x)


def test_cyclegan_translates_and_reports_paired_errors():
    model = gan.CycleGAN(channels=4, disc_channels=4)
    x = torch.rand(16, 1, 28, 28)
    history = fit(model, x, None, max_steps=2, batch_size=8, progress=False, device="cpu")
    assert set(history.train[-1][1]) == {"d_loss", "g_loss", "cycle_l1"}
    assert model.translate(x, "ab").shape == x.shape
    metrics = model.evaluate(x)
    assert set(metrics) == {"translation_l1", "identity_l1", "cycle_l1"}
    assert metrics["identity_l1"] == pytest.approx(float((x - gan.embolden(x)).abs().mean()))
    with pytest.raises(ValueError, match="direction"):
        model.translate(x, "ba2")


def test_cyclegan_learns_both_directions_on_a_toy_task():
    # thin = single bright pixels, bold = their 3x3 squares; both generators must learn, and
    # G_BA must not collapse to black (the failure of a sigmoid-output translator: cycle error
    # then equals the mean brightness of the input)
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x.view(64, -1)[torch.arange(64), torch.randint(64, (64,))] = 1.0
    model = gan.CycleGAN(shape=(1, 8, 8), channels=8, disc_channels=4)
    fit(model, x, None, max_steps=300, batch_size=32, lr=2e-3, progress=False, device="cpu")
    metrics = model.evaluate(x)
    with torch.no_grad():
        back = model.translate(gan.embolden(x), "ba")
    assert metrics["cycle_l1"] < 0.5 * float(x.mean()), metrics
    assert float((back - x).abs().mean()) < 0.5 * float((gan.embolden(x) - x).abs().mean())


def test_embolden_thickens_strokes():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    bold = gan.embolden(x)
    assert bold.sum() == 9 and bold[0, 0, 3:6, 3:6].min() == 1


# ---- the trainer's labelled batches and the registry -------------------------
def test_fit_batches_labels_with_their_examples():
    seen = []

    class Recorder(GenerativeModel):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def training_step(self, batch, optimizers):
            seen.append(batch)
            return {"loss": self.w.sum().detach()}

        def validation_score(self, x):
            return None

    x = torch.arange(50.0)[:, None]
    y = torch.arange(50)
    fit(Recorder(), (x, y), (x[:5], y[:5]), max_steps=8, batch_size=16, progress=False, device="cpu")
    assert len(seen) == 8
    for xb, yb in seen:
        assert torch.equal(xb[:, 0].long(), yb)  # each label stays with its example
    with pytest.raises(ValueError, match="pair"):
        fit(Recorder(), (x, y[:10]), None, max_steps=1, progress=False)


def _mode_collapse_rows() -> list[dict]:
    from pathlib import Path

    path = Path(__file__).parents[1] / "data" / "gan_mode_collapse.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_mode_collapse_tables_default_rows_come_from_the_current_default():
    """Chapter 4 reads data/gan_mode_collapse.jsonl; when the CLI's default changes, its rows must be remade."""
    from dgm import data

    defaults = [r for r in _mode_collapse_rows() if r["variant"] == "default"]
    assert {r["data"] for r in defaults} == {"ring-sharp", "grid-sharp"}
    spec = registry.get("gan")
    for data_name in ("ring-sharp", "grid-sharp"):
        group = [r for r in defaults if r["data"] == data_name]
        assert sorted(r["seed"] for r in group) == list(range(10))
        model = registry.build("gan", data.load(data_name, "val").info())
        assert {r["params"] for r in group} == {model.num_parameters()}
        assert {r["steps"] for r in group} == {spec.train["max_steps"]}
        stale = "the CLI's default changed: remake the default rows with data/gan_mode_collapse.sh"
        assert all(r["config"] == json.loads(json.dumps(model.config)) for r in group), stale
        assert all({key: r["train"][key] for key in spec.train} == spec.train for r in group), stale


def test_every_row_of_the_mode_collapse_table_has_the_same_budget():
    """The chapter compares remedies, so only the remedies may differ between rows: the steps, width,
    learning rate and its schedule, batch and the rule that picks the kept weights are the default's,
    and every row has the numbers the table shows."""
    spec = registry.get("gan")
    rows = _mode_collapse_rows()
    budget = {(r["steps"], r["config"]["hidden"], r["config"]["depth"], r["config"]["lr_schedule"],
               json.dumps(r["train"] | {"seed": None}, sort_keys=True)) for r in rows}
    train = dict(spec.train, max_steps=spec.train["max_steps"], seed=None)
    assert budget == {(spec.train["max_steps"], 128, 3, "cosine", json.dumps(train, sort_keys=True))}
    for r in rows:
        assert {"modes_captured", "high_quality_frac", "mode_std_ratio", "energy_distance"} <= set(r)
    seeds = {}
    for r in rows:
        seeds.setdefault((r["data"], r["variant"]), set()).add(r["seed"])
    assert all(len(s) >= 3 for s in seeds.values()), seeds


def test_registry_builds_the_chapter_models():
    for name, data_name in (("gan", "ring-sharp"), ("dcgan", "mnist5k"), ("cgan", "digits"), ("cyclegan", "mnist5k")):
        from dgm import data

        model = registry.build(name, data.load(data_name, "val").info())
        assert registry.get(name).labels == (name == "cgan")
        assert model.sample(3).shape[0] == 3
