"""Every model in the registry speaks the same API: one test over all of them.

Build on its data, one training step, ``sample`` shape and dtype, ``evaluate`` keys, and a checkpoint
round trip through :mod:`dgm.checkpoints` (digest, ``weights_only=True``) that rebuilds an identical model.
"""

from __future__ import annotations

import pytest
import torch

from dgm import checkpoints, data, registry, run

# small sizes, so every family runs in a second
SMALL = {"made": {"hidden_sizes": (32,)}, "pixelcnn": {"channels": 8, "num_layers": 2},
         "wavenet": {"channels": 8}, "gan": {"hidden": 16}, "dcgan": {"channels": 8}, "cgan": {"channels": 8},
         "cyclegan": {"channels": 4, "disc_channels": 4}, "realnvp": {"num_blocks": 2}, "nsf": {"num_blocks": 1},
         "maf": {"num_blocks": 1}, "iaf": {"num_blocks": 1}, "ddpm": {"timesteps": 50},
         "transformer": {"dim": 16, "heads": 2, "num_layers": 1},
         "fm": {"hidden": 16, "num_layers": 2, "eval_steps": 2}, "fm-guided": {"channels": 8, "eval_steps": 2},
         "fm-latent": {"ae_steps": 2, "ae_hidden": (32,), "hidden": 16, "num_layers": 2, "eval_steps": 2},
         "ebm": {"hidden": 16, "num_layers": 2, "langevin_steps": 2, "sample_steps": 5, "grid": 50},
         "ncsn": {"hidden": 16, "num_layers": 2, "num_levels": 3, "steps_per_level": 2}}
DATA_FOR = {"points": "ring", "categorical": "digits", "grey": "mnist5k", "binary": "mnist5k-bin"}


def small_model(name: str):
    """Registry model ``name``, small, built (seed 0) for the validation split of a data set it fits."""
    spec = registry.MODELS[name]
    split = data.load("mnist5k" if name == "cyclegan" else DATA_FOR[spec.data_kinds[0]], "val")
    torch.manual_seed(0)
    return registry.build(name, split.info(), **SMALL.get(name, {})), split


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_every_model_speaks_the_api_and_survives_a_checkpoint(name, tmp_path):
    spec = registry.MODELS[name]
    model, split = small_model(name)
    data_name = split.name
    batch = (split.x[:32], split.y[:32]) if spec.labels else split.x[:32]
    model.initialize(batch)
    losses = model.training_step(batch, model.configure_optimizers(1e-3))
    assert "loss" in losses or any(k.endswith("loss") for k in losses), losses
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())

    model.eval()
    torch.manual_seed(1)
    samples = model.sample(5)
    assert samples.shape == (5, *split.shape)
    assert samples.dtype == split.x.dtype or (samples.is_floating_point() and split.x.is_floating_point())

    path = tmp_path / f"{name}.pt"
    checkpoints.save({"model": name, "data": data_name, "config": model.config, "state_dict": model.state_dict()},
                     path)
    plain = torch.load(path, weights_only=True)  # tensors and plain values only
    assert plain[checkpoints.DIGEST_KEY] == checkpoints.weights_digest(model.state_dict())
    again, _ = run.load_checkpoint(str(path))
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    torch.manual_seed(1)
    assert torch.equal(again.sample(5), samples), "the reloaded model samples exactly the same"

    if name not in ("ae", "vae", "ddpm", "cyclegan"):  # the slow ones are measured in their own tests
        metrics = model.evaluate(split.x[:16])
        assert all(isinstance(v, float) for v in metrics.values())
        if model.has_exact_likelihood:
            assert {"nll_nats", "bpd"} <= set(metrics) or "nll_bound_nats" in metrics


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_the_same_seed_and_steps_give_bit_identical_weights(name):
    from dgm.train import fit

    spec = registry.MODELS[name]
    digests = []
    for _ in range(2):
        model, split = small_model(name)
        train = (split.x[:64], split.y[:64]) if spec.labels else split.x[:64]
        val = (split.x[64:96], split.y[64:96]) if spec.labels else split.x[64:96]
        history = fit(model, train, val, batch_size=16, max_steps=4, eval_every=2, seed=5, progress=False,
                      threads=1)
        digests.append((checkpoints.weights_digest(model.state_dict()), history.train, history.val))
    assert digests[0] == digests[1]


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_default_runs_are_defined_by_steps_on_every_kind_of_data(name):
    # a wall-clock budget gives a slower laptop a different run; a number of steps repeats the page's numbers
    spec = registry.MODELS[name]
    for kind in spec.data_kinds:
        settings = spec.train_settings({"kind": kind, "data": "?"})
        assert "budget_seconds" not in settings, (kind, settings)
        assert isinstance(settings.get("max_steps"), int) and settings["max_steps"] >= 0, (kind, settings)


def test_a_time_budget_replaces_the_default_steps(monkeypatch):
    from dgm import train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "fit", lambda model, *a, **settings: seen.update(settings) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run.train("gmm", "ring", budget_seconds=0.5, progress=False)
    assert seen["budget_seconds"] == 0.5 and "max_steps" not in seen
