"""Chapter 1's models and dgm.metrics."""

import math

import pytest
import torch

from dgm import data, metrics
from dgm.baselines import GaussianMixture, IndependentPixels


def test_independent_pixels_closed_form_is_the_smoothed_frequency_table():
    x = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 2]]).view(4, 1, 2)
    model = IndependentPixels((1, 2), num_levels=3, alpha=1.0)
    model.initialize(x)
    expected = torch.tensor([[4 / 7, 2 / 7, 1 / 7], [1 / 7, 2 / 7, 4 / 7]])  # (count + 1) / (4 + 3)
    assert torch.allclose(model.probs(), expected, atol=1e-6)


def test_independent_pixels_log_prob_sums_over_pixels():
    model = IndependentPixels((1, 2), num_levels=3, alpha=1.0)
    model.initialize(torch.tensor([[0, 1], [0, 2], [1, 2], [0, 2]]).view(4, 1, 2))
    with torch.no_grad():
        lp = model.log_prob(torch.tensor([[[0, 2]]]))
    assert float(lp) == pytest.approx(2 * math.log(4 / 7), abs=1e-6)


def test_independent_pixels_uniform_start_is_64_log_17_on_digits():
    test = data.load("digits", "test")
    model = IndependentPixels(test.shape, 17)
    assert model.evaluate(test.x)["nll_nats"] == pytest.approx(64 * math.log(17), abs=1e-3)


def test_independent_pixels_digits_baseline_is_106_nats():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    model = IndependentPixels(train.shape, 17, alpha=0.5)
    model.initialize(train.x)
    result = model.evaluate(test.x)
    assert result["nll_nats"] == pytest.approx(106.3, abs=1.0)
    assert result["bpd"] == pytest.approx(result["nll_nats"] / (64 * math.log(2)))


def test_without_smoothing_an_unseen_level_gives_infinite_nll():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    model = IndependentPixels(train.shape, 17, alpha=0.0)
    model.initialize(train.x)
    assert math.isinf(model.evaluate(test.x)["nll_nats"])


def test_independent_pixels_sampling_matches_the_probabilities():
    model = IndependentPixels((1, 1, 1), 3)
    with torch.no_grad():
        model.logits.copy_(torch.tensor([[0.2, 0.3, 0.5]]).log())
    torch.manual_seed(0)
    draws = model.sample(20_000).flatten()
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.2, 0.3, 0.5]), atol=0.015)
    assert model.sample(5).shape == (5, 1, 1, 1)


@pytest.mark.parametrize("bad,message", [
    (torch.full((2, 1, 8, 8), 17), "levels must lie in 0..16"),
    (torch.full((2, 1, 8, 8), 0.5), "integer pixel levels"),
    (torch.zeros(2, 1, 7, 7, dtype=torch.long), "shape"),
])
def test_independent_pixels_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        IndependentPixels((1, 8, 8), 17).log_prob(bad)


def test_gaussian_mixture_log_prob_matches_a_hand_computation():
    model = GaussianMixture(2, 2)
    with torch.no_grad():
        model.means.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    x = torch.tensor([[1.0, 1.0]])
    # unit covariances, equal weights
    expected = torch.logsumexp(torch.tensor([-1.0, -2.5]) - math.log(2 * math.pi) + math.log(0.5), 0)
    with torch.no_grad():
        assert float(model.log_prob(x)) == pytest.approx(float(expected), abs=1e-4)


def test_gaussian_mixture_initialisation_finds_all_eight_ring_modes():
    train = data.load("ring", "train")
    torch.manual_seed(1)
    model = GaussianMixture(2, 8)
    model.initialize(train.x)
    true_means = train.density.means.float()
    nearest = torch.cdist(true_means, model.means.detach()).min(1).values
    assert float(nearest.max()) < 0.1


def test_metrics_units_and_summary():
    assert metrics.nats_to_bpd(64 * math.log(2), 64) == pytest.approx(1.0)
    assert metrics.bpd_to_nats(metrics.nats_to_bpd(106.3, 64), 64) == pytest.approx(106.3)
    s = metrics.summarize([3.0, 1.0, 2.0])
    assert s["median"] == 2.0 and s["n"] == 3 and s["se"] == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(ValueError):
        metrics.summarize([])


def test_monte_carlo_kl_matches_torch_distributions():
    p = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
    q = torch.distributions.Normal(torch.tensor(1.0), torch.tensor(2.0))
    torch.manual_seed(0)
    estimate, se = metrics.kl_monte_carlo(lambda n: p.sample((n,)), p.log_prob, q.log_prob, 200_000)
    exact = float(torch.distributions.kl_divergence(p, q))
    assert abs(estimate - exact) < 4 * se and se < 0.005
    # the reverse direction is a different number: KL is not symmetric
    reverse = float(torch.distributions.kl_divergence(q, p))
    assert abs(estimate - reverse) > 10 * se
