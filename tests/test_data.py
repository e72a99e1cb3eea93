"""dgm.data: shapes, splits, checksums, seeds and the exact toy densities."""

import json
import math

import numpy as np
import pytest
import torch

from dgm import data


@pytest.mark.parametrize("split,size", [("train", 1000), ("val", 350), ("test", 447)])
def test_digits_split_sizes_and_levels(split, size):
    d = data.load("digits", split)
    assert d.x.shape == (size, 1, 8, 8) and d.x.dtype == torch.int64
    assert d.y.shape == (size,)
    assert int(d.x.min()) == 0 and int(d.x.max()) == 16
    assert d.kind == "categorical" and d.num_levels == 17 and d.dims == 64


def test_digits_split_is_first_1000_next_350_last_447():
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images.astype(np.int64))
    assert torch.equal(data.load("digits", "train").x[:, 0], images[:1000])
    assert torch.equal(data.load("digits", "val").x[:, 0], images[1000:1350])
    assert torch.equal(data.load("digits", "test").x[:, 0], images[1350:])


def test_mnist5k_stratified_disjoint_split():
    idx = data.mnist5k_split_indices()
    assert [len(idx[s]) for s in data.SPLITS] == [4000, 500, 500]
    union = np.concatenate([idx[s] for s in data.SPLITS])
    assert len(np.unique(union)) == 5000
    for split, per_class in [("train", 400), ("val", 50), ("test", 50)]:
        d = data.load("mnist5k", split)
        assert d.x.shape == (per_class * 10, 1, 28, 28)
        assert torch.equal(torch.bincount(d.y), torch.full((10,), per_class))
        assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0 and d.kind == "grey"


def test_mnist5k_binarized_fixed_and_dynamic():
    grey = data.load("mnist5k", "train").x
    fixed = data.load("mnist5k-bin", "train")
    assert torch.equal(fixed.x, (grey > 0.5).float()) and fixed.batch_transform is None
    dynamic = data.load("mnist5k-bin", "train", binarize="dynamic")
    assert torch.equal(dynamic.x, grey)  # resampled per batch by the trainer
    torch.manual_seed(0)
    a, b = dynamic.batch_transform(grey[:64]), dynamic.batch_transform(grey[:64])
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    # val/test of the dynamic version: one fixed, reproducible draw
    v1 = data.load("mnist5k-bin", "val", binarize="dynamic").x
    v2 = data.load("mnist5k-bin", "val", binarize="dynamic").x
    assert torch.equal(v1, v2) and set(v1.unique().tolist()) <= {0.0, 1.0}


def test_checksum_mismatch_is_reported(monkeypatch, tmp_path):
    bad = json.loads(data._CHECKSUMS.read_text())
    bad["digits.images"]["sha256"] = "0" * 64
    path = tmp_path / "checksums.json"
    path.write_text(json.dumps(bad))
    monkeypatch.setattr(data, "_CHECKSUMS", path)
    data._digits_arrays.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="checksum mismatch for digits.images"):
            data.load("digits", "train")
    finally:
        data._digits_arrays.cache_clear()


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: digits"):
        data.load("cifar", "train")
    with pytest.raises(ValueError, match="use one of train, val, test"):
        data.load("digits", "validation")
    with pytest.raises(ValueError, match="binarize"):
        data.load("digits", "train", binarize="dynamic")


@pytest.mark.parametrize("name", list(data.TOYS))
def test_toy_splits_reproduce_and_differ(name):
    a, b = data.load(name, "train"), data.load(name, "train")
    assert torch.equal(a.x, b.x) and a.x.shape == (20_000, 2) and a.x.dtype == torch.float32
    test = data.load(name, "test")
    assert not torch.equal(a.x[:100], test.x[:100])
    assert torch.equal(a.density.sample(10, seed=3), a.density.sample(10, seed=3))
    assert not torch.equal(a.density.sample(10, seed=3), a.density.sample(10, seed=4))


@pytest.mark.parametrize("name,lim", [("ring", 4.0), ("checkerboard", 3.0), ("moons", 3.5),
                                      ("swissroll", 4.0), ("ring-sharp", 1.2), ("grid-sharp", 4.5)])
def test_toy_densities_integrate_to_one(name, lim):
    density = data.toy_density(name)
    # the grid must resolve the narrowest component (sigma 0.01 for ring-sharp)
    res = 2401 if name in ("ring-sharp", "grid-sharp") else 801
    axis = torch.linspace(-lim, lim, res, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    p = density.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp()
    cell = (axis[1] - axis[0]) ** 2
    assert float(p.sum() * cell) == pytest.approx(1.0, abs=0.01)


def test_toy_log_prob_matches_torch_distributions():
    density = data.toy_density("ring")
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=density.weights),
        torch.distributions.Independent(
            torch.distributions.Normal(density.means, torch.full_like(density.means, density.std)), 1),
    )
    x = density.sample(500, seed=1).double()
    assert torch.allclose(density.log_prob(x), mix.log_prob(x), atol=1e-10)


def test_blurred_box_is_stable_far_from_the_board():
    density = data.toy_density("checkerboard")
    x = torch.tensor([[0.5, 0.5], [6.0, 6.0], [-3.0, 0.2]], dtype=torch.float64)
    lp = density.log_prob(x)
    assert torch.isfinite(lp).all()
    assert lp[0] == pytest.approx(-math.log(8), abs=1e-3)  # inside a square: uniform density 1/8


def test_ring_entropy_and_standard_error():
    entropy, se = data.toy_density("ring").entropy()
    assert entropy == pytest.approx(2.18, abs=0.01)
    assert 0 < se < 0.005
    assert data.toy_density("ring").entropy() == (entropy, se)  # seeded
