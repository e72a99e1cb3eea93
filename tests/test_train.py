"""dgm.train.fit: budgets, early stopping, seeding, NaN errors, custom training steps."""

import time

import pytest
import torch
from torch import nn

from dgm import data
from dgm.base import GenerativeModel
from dgm.baselines import GaussianMixture, IndependentPixels
from dgm.train import fit


class DiagonalGaussian(GenerativeModel):
    """A tiny model for trainer tests: a learnable mean and log-std per dimension."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_std = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x):
        return torch.distributions.Normal(self.mean, self.log_std.exp()).log_prob(x).sum(-1)

    def sample(self, n):
        return self.mean + self.log_std.exp() * torch.randn(n, len(self.mean))


def ring():
    return data.load("ring", "train").x, data.load("ring", "val").x


def test_max_steps_is_respected_and_history_is_logged():
    train, val = ring()
    history = fit(DiagonalGaussian(), train, val, max_steps=250, eval_every=50, patience=None, progress=False)
    assert history.steps == 250 and history.stopped_because == "max_steps"
    assert [s for s, _ in history.val] == [0, 50, 100, 150, 200, 250]
    assert [s for s, _ in history.train] == [50, 100, 150, 200, 250]


def test_budget_seconds_is_respected():
    train, val = ring()
    start = time.perf_counter()
    history = fit(DiagonalGaussian(), train, val, budget_seconds=1.0, eval_every=10_000, progress=False)
    elapsed = time.perf_counter() - start
    assert history.stopped_because == "budget_seconds"
    assert history.steps > 10
    # one step past the budget at most; the set-up outside the clock only gets a loose bound, since a busy
    # machine slows it several-fold
    assert history.seconds < 2.0 and elapsed < 30.0


def test_training_reduces_the_loss_and_restores_the_best_weights():
    train, val = ring()
    model = DiagonalGaussian()
    history = fit(model, train, val, max_steps=600, lr=0.05, eval_every=20, patience=None, progress=False)
    assert history.val[-1][1] < history.val[0][1] - 0.3
    best = min(score for _, score in history.val)
    assert history.best_val == best
    with torch.no_grad():
        final = float(-model.log_prob(val).mean())
    assert final == pytest.approx(best, abs=1e-5)


def test_early_stopping_keeps_a_closed_form_start_that_training_cannot_improve():
    train, val = data.load("digits", "train").x, data.load("digits", "val").x
    model = IndependentPixels((1, 8, 8), 17, alpha=0.5)
    history = fit(model, train, val, max_steps=2000, lr=0.5, eval_every=20, patience=3, progress=False)
    assert history.stopped_because == "early_stopping"
    assert history.best_step == 0  # huge steps away from the smoothed MLE only hurt validation
    assert history.steps == 60


def test_same_seed_same_numbers_different_seed_different_numbers():
    train, val = ring()

    def run(seed):
        model = GaussianMixture(2, 8)
        fit(model, train, val, max_steps=50, eval_every=25, seed=seed, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_nan_loss_raises_naming_the_step():
    class Exploding(DiagonalGaussian):
        def loss(self, x):
            return super().loss(x) * (float("nan") if self.calls() >= 7 else 1.0)

        def calls(self):  # training calls only; validation also calls loss
            self._n = getattr(self, "_n", 0) + int(self.training)
            return self._n

    train, val = ring()
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 7.*lower learning rate"):
        fit(Exploding(), train, val, max_steps=50, progress=False)


def test_custom_training_step_with_two_optimizers():
    """A GAN-like family: two optimizers, its own step, no validation score."""

    class TwoPlayer(DiagonalGaussian):
        def configure_optimizers(self, lr):
            return [torch.optim.SGD([self.mean], lr=lr), torch.optim.SGD([self.log_std], lr=lr)]

        def training_step(self, x, optimizers):
            losses = {}
            for name, opt in zip(("mean_loss", "std_loss"), optimizers):
                opt.zero_grad()
                loss = self.loss(x)
                loss.backward()
                opt.step()
                losses[name] = loss.detach()
            return losses

        def validation_score(self, x):
            return None

    train, val = ring()
    model = TwoPlayer()
    history = fit(model, train, val, max_steps=40, eval_every=10, lr=0.1, progress=False)
    assert set(history.train[-1][1]) == {"mean_loss", "std_loss"}
    assert history.val == [] and history.best_step is None
    assert model.log_std.detach().abs().sum() > 0 and history.steps == 40


def test_batch_transform_is_applied_to_training_batches():
    seen = []

    class Spy(DiagonalGaussian):
        def training_step(self, x, optimizers):
            seen.append(x.clone())
            return super().training_step(x, optimizers)

    train, val = ring()
    fit(Spy(), train, val, max_steps=3, batch_transform=lambda b: b * 0 + 7, progress=False)
    assert all(torch.all(b == 7) for b in seen)


@pytest.mark.parametrize("kwargs,message", [
    ({}, "give max_steps or budget_seconds"),
    ({"max_steps": -1}, "max_steps must be >= 0"),
    ({"budget_seconds": 0}, "budget_seconds must be > 0"),
])
def test_bad_arguments_say_what_to_fix(kwargs, message):
    train, val = ring()
    with pytest.raises(ValueError, match=message):
        fit(DiagonalGaussian(), train, val, **kwargs)


def test_not_a_generative_model_is_rejected():
    with pytest.raises(TypeError, match="GenerativeModel"):
        fit(nn.Linear(2, 2), torch.zeros(4, 2), max_steps=1)


def test_schedule_factors_span_the_run():
    from dgm.base import lr_schedule_factor

    assert [lr_schedule_factor("constant", p) for p in (0, 0.5, 1)] == [1.0, 1.0, 1.0]
    cosine = [lr_schedule_factor("cosine", k / 8) for k in range(9)]
    assert cosine[0] == 1.0 and cosine[4] == pytest.approx(0.5) and cosine[8] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    assert lr_schedule_factor("halving:0.25", 0.5) == pytest.approx(0.25)
    assert lr_schedule_factor("cosine", 1.7) == lr_schedule_factor("cosine", 1.0)  # past the end: stays at the end


@pytest.mark.parametrize("schedule", ["linear", "halving:", "halving:-1", "halving:nan", 3, None])
def test_a_bad_schedule_name_says_what_is_allowed(schedule):
    from dgm.base import check_lr_schedule

    with pytest.raises(ValueError, match="lr_schedule|fraction of the run"):
        check_lr_schedule(schedule)


def _rates_used(model, steps, **fit_args):
    """The learning rate of the first optimizer at each training step of a fit of ``steps`` steps."""
    seen, step_once = [], model.training_step

    def recording_step(batch, optimizers):
        seen.append(optimizers[0].param_groups[0]["lr"])
        return step_once(batch, optimizers)

    model.training_step = recording_step
    fit(model, fit_args.pop("train"), max_steps=steps, lr=0.01, seed=0, patience=None, **fit_args)
    return seen


@pytest.mark.parametrize("name, settings, schedule", [
    ("ddpm", {"hidden": 8, "num_layers": 1, "timesteps": 10, "lr_schedule": "cosine"}, "cosine"),
    ("realnvp", {"num_blocks": 1, "hidden_size": 8, "lr_schedule": "halving:0.25"}, "halving:0.25"),
    ("nsf", {"num_blocks": 1, "hidden_size": 8}, "halving:0.15"),
])
@pytest.mark.parametrize("steps", [8, 20])
def test_a_run_of_n_steps_ends_its_schedule_at_step_n(name, settings, schedule, steps):
    from dgm import registry
    from dgm.base import lr_schedule_factor

    ring = data.load("ring", "train").x[:256]
    model = registry.build(name, data.load("ring", "val").info(), **settings)
    assert model.lr_schedule == schedule
    rates = _rates_used(model, steps, train=ring, batch_size=64)
    assert rates == pytest.approx([0.01 * lr_schedule_factor(schedule, k / steps) for k in range(steps)])


def test_a_budget_run_spreads_its_schedule_over_the_budget(monkeypatch):
    from dgm import registry
    import dgm.train as train_module

    clock = {"now": 0.0}

    def fake_clock():  # one second per call: the run's progress is read from the clock
        clock["now"] += 1.0
        return clock["now"]

    model = registry.build("ddpm", data.load("ring", "val").info(), hidden=8, num_layers=1, timesteps=10)
    assert model.lr_schedule == "cosine"
    monkeypatch.setattr(train_module.time, "perf_counter", fake_clock)
    seen, step_once = [], model.training_step
    model.training_step = lambda b, opts: (seen.append(opts[0].param_groups[0]["lr"]), step_once(b, opts))[1]
    fit(model, data.load("ring", "train").x[:256], budget_seconds=40, batch_size=64, lr=0.01, patience=None)
    assert seen[0] == pytest.approx(0.01) and 0 < len(seen) < 40
    assert seen[-1] < 0.002 and all(a >= b for a, b in zip(seen, seen[1:]))
