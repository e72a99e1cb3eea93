"""Chapter 2's autoregressive models: the chain rule holds, probabilities sum to one,
masks are right (checked against nflows' MADE), sampling, training and input checks."""

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from dgm import data, registry, run
from dgm.autoregressive import (
    FVSBN, MADE, NADE, MaskedConv2d, MaskedLinear, PixelCNN, Transformer, WaveNet, causal_mask,
    dependency_matrix, made_degrees, made_masks, mask_connectivity, masked_attention, receptive_field,
    wavenet_receptive_field,
)
from dgm.train import fit

# tiny versions of every model: (name, constructor(shape, num_levels))
TINY = {
    "fvsbn": lambda shape, k: FVSBN(shape, k),
    "fvsbn-onehot": lambda shape, k: FVSBN(shape, k, encoding="onehot"),
    "nade": lambda shape, k: NADE(shape, k, hidden_size=16),
    "nade-onehot": lambda shape, k: NADE(shape, k, hidden_size=16, encoding="onehot"),
    "made": lambda shape, k: MADE(shape, k, hidden_sizes=(32, 32)),
    "made-onehot": lambda shape, k: MADE(shape, k, hidden_sizes=(32,), encoding="onehot"),
    "made-3-orders": lambda shape, k: MADE(shape, k, hidden_sizes=(32,), num_masks=3, order_agnostic=True),
    "pixelcnn": lambda shape, k: PixelCNN(shape, k, channels=16, num_layers=4),
    "pixelcnn-scaled-no-position": lambda shape, k: PixelCNN(shape, k, channels=16, num_layers=4,
                                                             encoding="scaled", position=False),
    "pixelcnn-plain": lambda shape, k: PixelCNN(shape, k, channels=16, num_layers=4, gated=False),
    "pixelcnn-plain-no-position": lambda shape, k: PixelCNN(shape, k, channels=16, num_layers=4, gated=False,
                                                            position=False),
    "wavenet": lambda shape, k: WaveNet(shape, k, channels=16),
    "wavenet-k3-no-position": lambda shape, k: WaveNet(shape, k, channels=16, kernel_size=3, position=False),
    "transformer": lambda shape, k: Transformer(shape, k, dim=16, heads=2, num_layers=2),
}
# these see every earlier pixel on a small image (MADE's random hidden degrees
# may drop some paths, the plain PixelCNN has a blind spot)
SEES_ALL_EARLIER = {"fvsbn", "fvsbn-onehot", "nade", "nade-onehot", "pixelcnn", "pixelcnn-scaled-no-position",
                    "wavenet", "wavenet-k3-no-position", "transformer"}


def strictly_lower(d):
    return torch.ones(d, d, dtype=torch.bool).tril(-1)


def all_binary_images(shape):
    d = math.prod(shape)
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d))).view(-1, *shape)


# ---- the autoregressive property ----------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_conditional_i_depends_only_on_earlier_pixels(name):
    torch.manual_seed(0)
    model = TINY[name]((1, 4, 4), 3)
    dep = dependency_matrix(model)  # [i, j]: gradient of logits_i w.r.t. input j is non-zero
    assert not (dep & ~strictly_lower(16)).any(), "a conditional sees its own pixel or a later one"
    assert dep[1:].any(1).all(), "every conditional after the first should see some earlier pixel"
    if name in SEES_ALL_EARLIER:
        assert torch.equal(dep, strictly_lower(16))


def test_dependency_matrix_catches_a_model_that_peeks():
    torch.manual_seed(0)
    model = PixelCNN((1, 4, 4), 3, channels=8, num_layers=2, gated=False)
    model.first = torch.nn.Conv2d(3, 8, 3, padding=1)  # an unmasked first layer sees the pixel itself
    dep = dependency_matrix(model)
    assert dep.diagonal().any() and (dep & ~strictly_lower(16)).any()


def test_gated_pixelcnn_has_no_blind_spot_and_the_plain_one_has():
    torch.manual_seed(0)
    shape, pixel = (1, 7, 7), (3, 3)
    before = torch.arange(49).view(7, 7) < 3 * 7 + 3  # everything before (3, 3) in raster order
    gated = receptive_field(PixelCNN(shape, 2, channels=16, num_layers=4), pixel)
    plain = receptive_field(PixelCNN(shape, 2, channels=16, num_layers=4, gated=False), pixel)
    assert torch.equal(gated, before)
    assert not (plain & ~before).any()
    # the blind spot: up and to the right, never reached however deep the masked stack
    assert not plain[2, 5] and not plain[2, 6] and not plain[1, 6]
    assert plain[2, 4] and plain[3, :3].all()


def test_wavenet_sees_exactly_its_receptive_field():
    torch.manual_seed(0)
    assert wavenet_receptive_field([1, 2, 4, 8, 16, 32], kernel_size=2) == 64
    assert wavenet_receptive_field([1, 2], kernel_size=3) == 7
    model = WaveNet((1, 3, 4), 3, channels=16, kernel_size=2, dilations=(1, 2))
    reach = wavenet_receptive_field(model.dilations, 2)
    assert reach == 4
    i, j = torch.arange(12)[:, None], torch.arange(12)[None, :]
    assert torch.equal(dependency_matrix(model), (j < i) & (j >= i - reach))
    # the default dilations grow until every earlier pixel of the image is in reach
    assert wavenet_receptive_field(WaveNet((1, 8, 8), 17).dilations) >= 63


# ---- normalisation ----------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_probabilities_of_all_binary_images_sum_to_one(name):
    torch.manual_seed(0)
    shape = (1, 3, 3)
    model = TINY[name](shape, 2).double().eval()
    with torch.no_grad():
        total = model.log_prob(all_binary_images(shape)).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["nade", "made-3-orders", "pixelcnn", "wavenet"])
def test_probabilities_of_all_three_level_images_sum_to_one(name):
    torch.manual_seed(0)
    shape = (1, 2, 3)
    model = TINY[name](shape, 3).double().eval()
    images = torch.tensor(list(itertools.product(range(3), repeat=6))).view(-1, *shape)
    with torch.no_grad():
        assert float(model.log_prob(images).exp().sum()) == pytest.approx(1.0, abs=1e-5)


def test_log_prob_is_the_sum_of_the_conditionals():
    torch.manual_seed(0)
    model = NADE((1, 2, 2), 3, hidden_size=8)
    x = torch.tensor([[[[2, 0], [1, 1]]]])
    with torch.no_grad():
        log_p = model.logits(x).log_softmax(-1)[0]  # (D, K)
        expected = log_p[0, 2] + log_p[1, 0] + log_p[2, 1] + log_p[3, 1]
        assert float(model.log_prob(x)) == pytest.approx(float(expected), abs=1e-5)


# ---- MADE's masks ---------------------------------------------------------------
def test_made_masks_match_a_hand_worked_example():
    # 3 inputs in natural order, one hidden layer of 4 units with degrees 1, 2, 1, 2
    masks = made_masks(torch.tensor([1, 2, 3]), [torch.tensor([1, 2, 1, 2])])
    assert torch.equal(masks[0], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]]).float())
    assert torch.equal(masks[1], torch.tensor([[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]]).float())
    # no hidden layer: the direct, strictly lower-triangular mask
    (direct,) = made_masks(torch.tensor([1, 2, 3]), [])
    assert torch.equal(direct, strictly_lower(3).float())


@pytest.mark.parametrize("seed,hidden_sizes", [(0, (40,)), (1, (30, 30)), (2, (50, 20, 50)), (3, (64,))])
def test_made_mask_product_is_strictly_lower_triangular_in_the_ordering(seed, hidden_sizes):
    gen = torch.Generator().manual_seed(seed)
    d = 6
    ordering = torch.randperm(d, generator=gen)
    in_degrees, hidden = made_degrees(ordering, hidden_sizes, gen)
    assert torch.equal(in_degrees[ordering], torch.arange(1, d + 1))
    for degrees in hidden:
        assert degrees.min() >= 1 and degrees.max() <= d - 1
    reach = mask_connectivity(made_masks(in_degrees, hidden))  # [out, in]
    assert torch.equal(reach, in_degrees[:, None] > in_degrees[None, :])
    # the same in the model: with 2 levels, collapse the one-hot features to pixels
    model = MADE((1, 2, 3), 2, hidden_sizes=hidden_sizes, num_masks=3, order_agnostic=True, mask_seed=seed,
                 encoding="onehot")
    for m in range(3):
        features = mask_connectivity(model.masks(m))  # (D*K, D*E)
        pixels = features.view(d, 2, d, 2).any(3).any(1)
        degrees = torch.empty(d, dtype=torch.long)
        degrees[model.orderings[m]] = torch.arange(1, d + 1)
        assert not (pixels & ~(degrees[:, None] > degrees[None, :])).any()
        assert pixels.sum() >= 0.8 * d * (d - 1) / 2  # nearly every allowed path exists


def test_made_masks_agree_with_nflows_made():
    from nflows.transforms import made as nflows_made  # test-only oracle, pinned in requirements-dev.txt

    torch.manual_seed(0)
    d, hidden = 7, 24
    # tanh, not relu: no unit is ever dead, so gradients show every path the masks allow
    oracle = nflows_made.MADE(features=d, hidden_features=hidden, num_blocks=2, use_residual_blocks=False,
                              random_mask=True, activation=torch.tanh)
    layers = [oracle.initial_layer, *[block.linear for block in oracle.blocks], oracle.final_layer]
    hidden_degrees = [layer.degrees for layer in layers[:-1]]
    ours = made_masks(torch.arange(1, d + 1), hidden_degrees)
    for mine, theirs in zip(ours, layers):
        assert torch.equal(mine, theirs.mask)
    # path existence through nflows' network, measured on its forward pass
    x = torch.randn(64, d, requires_grad=True)
    rows = [torch.autograd.grad(oracle(x)[:, i].sum(), x, retain_graph=True)[0].abs().sum(0) > 0 for i in range(d)]
    assert torch.equal(torch.stack(rows), mask_connectivity(ours))
    # another ordering is a relabelling: pixel ordering[t] plays the role of nflows' input t
    ordering = torch.tensor([3, 0, 6, 2, 5, 1, 4])
    in_degrees, _ = made_degrees(ordering, [hidden])
    reach = mask_connectivity(made_masks(in_degrees, hidden_degrees))
    theirs = torch.stack(rows)
    assert torch.equal(reach[ordering][:, ordering], theirs)


def test_made_mixture_trains_one_mask_per_step_and_scores_the_average():
    torch.manual_seed(0)
    model = MADE((1, 2, 2), 3, hidden_sizes=(16,), num_masks=2, order_agnostic=True)
    x = torch.randint(3, (5, 1, 2, 2))
    model.train()
    model.loss(x)
    assert model.mask_index == 1
    model.loss(x)
    assert model.mask_index == 0
    model.eval()  # no dropout
    per_mask = []
    for m in range(2):
        model.use_mask(m)
        per_mask.append(model._log_prob_of_levels(x.flatten(1)))
    expected = torch.stack(per_mask).logsumexp(0) - math.log(2)
    assert torch.allclose(model.log_prob(x), expected)
    # the mixture is differentiable although it switches masks inside one graph
    model.log_prob(x).sum().backward()
    assert model.layers[0].weight.grad.abs().sum() > 0


# ---- sampling ----------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_samples_are_valid_levels_and_seeded(name):
    torch.manual_seed(0)
    model = TINY[name]((1, 3, 4), 5)
    torch.manual_seed(7)
    a = model.sample(6)
    assert a.shape == (6, 1, 3, 4) and a.dtype == torch.int64
    assert a.min() >= 0 and a.max() <= 4
    torch.manual_seed(7)
    assert torch.equal(model.sample(6), a)
    torch.manual_seed(8)
    assert not torch.equal(model.sample(6), a)
    assert model.training  # sample() switches to eval for the draw and back


def test_sampling_follows_the_learned_conditionals():
    # a 2-pixel binary FVSBN: x_1 ~ p(x_1), then x_2 copies x_1 almost surely
    model = FVSBN((1, 1, 2), 2, encoding="onehot")
    with torch.no_grad():
        model.pixel_bias.copy_(torch.tensor([[0.0, math.log(3)], [0.0, 0.0]]))  # p(x_1 = 1) = 3/4
        model.linear.weight.zero_()
        model.linear.weight[2, 0], model.linear.weight[3, 1] = 10.0, 10.0  # x_2 = x_1
    torch.manual_seed(0)
    draws = model.sample(4000).flatten(1)
    assert draws[:, 0].float().mean() == pytest.approx(0.75, abs=0.03)
    assert (draws[:, 0] == draws[:, 1]).float().mean() > 0.99


# ---- training -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "made-3-orders", "pixelcnn", "pixelcnn-plain",
                                  "wavenet", "transformer"])
def test_training_with_fit_lowers_the_loss_on_a_small_batch(name):
    torch.manual_seed(0)
    x = data.load("digits", "train").x[:32]
    model = TINY[name]((1, 8, 8), 17)
    model.initialize(x)  # the independent-pixels start, about 100 nats
    with torch.no_grad():
        before = float(model.eval().loss(x))
    history = fit(model, x, x[:16], max_steps=60, batch_size=32, lr=3e-3, eval_every=20, seed=0,
                  initialize=False, progress=False)
    with torch.no_grad():
        after = float(model.loss(x))
    assert history.steps == 60 and not model.training
    assert after < before - 5, f"{name}: loss {before:.1f} -> {after:.1f}"


def test_initialize_starts_at_the_independent_baseline():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    model = FVSBN(train.shape, 17, encoding="onehot")
    with torch.no_grad():
        model.linear.weight.zero_()
    model.initialize(train.x)
    assert model.evaluate(test.x)["nll_nats"] == pytest.approx(106.3, abs=1.0)


def test_binary_float_images_are_accepted():
    torch.manual_seed(0)
    x = (torch.rand(8, 1, 4, 4) > 0.5).float()
    model = PixelCNN((1, 4, 4), 2, channels=8, num_layers=2).eval()
    assert torch.equal(model.log_prob(x), model.log_prob(x.long()))
    fit(model, x, None, max_steps=3, batch_size=4, progress=False)


# ---- registry and checkpoints ------------------------------------------------------------
@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "pixelcnn", "wavenet"])
def test_registered_models_rebuild_from_their_config(name, tmp_path):
    info = data.load("digits", "train").info()
    spec = registry.get(name)
    assert set(spec.data_kinds) == {"categorical", "binary"}
    torch.manual_seed(0)
    model = registry.build(name, info)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": name, "config": model.config, "state_dict": model.state_dict()}, path)
    again, _ = run.load_checkpoint(str(path))
    x = data.load("digits", "val").x[:4]
    with torch.no_grad():
        assert torch.allclose(again.log_prob(x), model.eval().log_prob(x))
    binary = registry.build(name, {"data": "mnist5k-bin", "shape": [1, 28, 28], "kind": "binary", "num_levels": 2})
    assert binary.num_levels == 2


def test_a_seed_fixes_the_whole_run_initial_weights_included():
    runs = [run.train("nade", "digits", seed=3, steps=20, progress=False)[2] for _ in range(2)]
    assert runs[0]["test_nll_nats"] == runs[1]["test_nll_nats"]
    other = run.train("nade", "digits", seed=4, steps=20, progress=False)[2]
    assert other["test_nll_nats"] != runs[0]["test_nll_nats"]


# ---- input checks -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "pixelcnn", "wavenet", "transformer"])
@pytest.mark.parametrize("bad,message", [
    (torch.full((2, 1, 3, 3), 3), r"levels must lie in 0\.\.2"),
    (torch.full((2, 1, 3, 3), -1), r"levels must lie in 0\.\.2"),
    (torch.full((2, 1, 3, 3), 0.5), "integer pixel levels"),
    (torch.zeros(2, 1, 4, 4, dtype=torch.long), "shape"),
    (torch.zeros(1, 3, 3, dtype=torch.long), "add a batch dimension"),
])
def test_bad_input_gives_a_clear_error(name, bad, message):
    model = TINY[name]((1, 3, 3), 3)
    with pytest.raises(ValueError, match=message):
        model.log_prob(bad)


@pytest.mark.parametrize("build,message", [
    (lambda: PixelCNN((3, 8, 8), 17), "one-channel"),
    (lambda: PixelCNN((1, 8, 8), 17, kernel_size=4), "odd"),
    (lambda: PixelCNN((8, 8), 17), r"\(C, H, W\)"),
    (lambda: NADE((1, 8, 8), 17, encoding="binary"), "encoding must be one of"),
    (lambda: NADE((1, 8, 8), 1), "num_levels must be >= 2"),
    (lambda: MADE((1, 8, 8), 17, hidden_sizes=()), "at least one hidden layer"),
    (lambda: MADE((1, 8, 8), 17, dropout=1.0), "dropout"),
    (lambda: MaskedConv2d(1, 4, 3, "C"), "mask_type"),
    (lambda: MaskedConv2d(1, 4, 2, "A"), "odd"),
    (lambda: MaskedLinear(3, 2).set_mask(torch.ones(3, 2)), "does not match"),
    (lambda: made_masks(torch.tensor([1.0, 2.0]), []), "integer tensor"),
    (lambda: made_masks(torch.tensor([0, 1]), []), ">= 1"),
    (lambda: made_degrees(torch.tensor([0, 0, 1]), [4]), "permutation"),
    (lambda: WaveNet((1, 8, 8), 17, dilations=(1, 0)), "dilation"),
    (lambda: receptive_field(PixelCNN((1, 4, 4), 2, channels=4, num_layers=1), (4, 0)), "outside"),
    (lambda: FVSBN((1, 8, 8), 17).sample(0), "positive integer"),
    (lambda: Transformer((1, 8, 8), 17, dim=30, heads=4), "multiple of heads"),
    (lambda: Transformer((1, 8, 8), 17, dropout=1.0), "dropout"),
    (lambda: causal_mask(0), "positive integer"),
])
def test_bad_settings_give_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_masked_conv_masks():
    a, b = MaskedConv2d(1, 1, 3, "A").mask[0, 0], MaskedConv2d(1, 1, 3, "B").mask[0, 0]
    assert torch.equal(a, torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]]).float())
    assert torch.equal(b, torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]]).float())


def test_command_line_trains_a_chapter_2_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dgm", "train", "fvsbn", "--data", "digits", "--steps", "100",
                           "--out", "."], cwd=tmp_path, env={**os.environ, "DGM_PROGRESS": "off"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "fvsbn" and (tmp_path / "fvsbn-digits-seed0.pt").is_file()
    assert result["test_nll_nats"] < 100  # already well below the independent baseline (106.4)


# ---- the causal transformer -----------------------------------------------------------------
def test_causal_mask_is_lower_triangular_and_matches_fused_attention():
    mask = causal_mask(5)
    assert mask.dtype == torch.bool and torch.equal(mask, torch.ones(5, 5, dtype=torch.bool).tril())
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)  # (batch, heads, length, head dim)
    out = masked_attention(q, k, v, mask)
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    # output i ignores keys and values j > i, and does depend on some j <= i
    k2, v2 = k.clone(), v.clone()
    k2[..., 3:, :] += 5.0
    v2[..., 3:, :] -= 5.0
    out2 = masked_attention(q, k2, v2, mask)
    assert torch.allclose(out2[..., :3, :], out[..., :3, :], atol=1e-6)
    assert not torch.allclose(out2[..., 3:, :], out[..., 3:, :])
    # without the mask, early outputs see the future
    assert not torch.allclose(masked_attention(q, k2, v2, torch.ones(5, 5, dtype=torch.bool))[..., :3, :],
                              out[..., :3, :])


def test_transformer_log_prob_is_the_chain_rule():
    torch.manual_seed(0)
    model = Transformer((1, 3, 4), 5, dim=16, heads=2).double().eval()
    x = torch.randint(5, (4, 1, 3, 4))
    levels = x.flatten(1)
    with torch.no_grad():
        # conditional i computed from the prefix x_<i alone (no later pixel is even in the input)
        expected = torch.zeros(4, dtype=torch.float64)
        for i in range(12):
            logits = model._network(model._encode(levels[:, :i + 1]))[:, i] + model.pixel_bias[i]
            expected += logits.log_softmax(-1).gather(1, levels[:, i:i + 1]).squeeze(1)
        assert torch.allclose(model.log_prob(x), expected, atol=1e-10)
        # changing pixel j leaves the conditionals of positions <= j unchanged, and changes a later one
        full = model.logits(x)
        for j in (0, 5, 10):
            changed = levels.clone()
            changed[:, j] = (changed[:, j] + 1) % 5
            other = model.logits(changed.view_as(x))
            assert torch.allclose(other[:, :j + 1], full[:, :j + 1], atol=1e-10)
            assert not torch.allclose(other[:, j + 1:], full[:, j + 1:])


def test_transformer_cached_sampling_equals_uncached():
    torch.manual_seed(0)
    model = Transformer((1, 8, 8), 17, dim=16, heads=2, num_layers=2).double()
    with torch.no_grad():
        model.pixel_bias.normal_()  # conditionals far from uniform
    torch.manual_seed(3)
    cached = model.sample(20, cache=True)
    torch.manual_seed(3)
    uncached = model.sample(20, cache=False)
    assert cached.shape == (20, 1, 8, 8) and cached.dtype == torch.int64
    assert 0 <= int(cached.min()) and int(cached.max()) <= 16
    assert torch.equal(cached, uncached)
    torch.manual_seed(4)
    assert not torch.equal(model.sample(20), cached)
    # step by step through the cache, fed a real image, the logits are those of the one full pass
    x = data.load("digits", "val").x[:5]
    levels = x.flatten(1)
    model.eval()
    with torch.no_grad():
        caches = model._new_cache(5)
        stepped = torch.stack([model._cached_step(levels, i, caches) for i in range(64)], 1)
        assert torch.allclose(stepped, model.logits(x), atol=1e-10)


def test_transformer_is_registered_with_step_defined_training(tmp_path):
    spec = registry.get("transformer")
    assert spec.cls is Transformer and set(spec.data_kinds) == {"categorical", "binary"}
    assert "budget_seconds" not in spec.train and spec.train["max_steps"] > 0
    info = data.load("digits", "train").info()
    model = registry.build("transformer", info)
    assert model.lr_schedule == "cosine"  # over the run, whatever --steps says (the trainer applies it)
    torch.manual_seed(0)
    small = registry.build("transformer", info, dim=16, heads=2, num_layers=1)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": "transformer", "config": small.config, "state_dict": small.state_dict()}, path)
    again, _ = run.load_checkpoint(str(path))
    x = data.load("digits", "val").x[:4]
    with torch.no_grad():
        assert torch.allclose(again.log_prob(x), small.eval().log_prob(x))


def test_transformer_learning_rate_follows_the_half_cosine_over_the_run():
    from dgm.train import fit

    x = data.load("digits", "train").x[:64]
    model = Transformer((1, 8, 8), 17, dim=16, heads=2, num_layers=1, lr_schedule="cosine")
    rates, step_once = [], model.training_step

    def recording_step(batch, optimizers):
        rates.append(optimizers[0].param_groups[0]["lr"])
        return step_once(batch, optimizers)

    model.training_step = recording_step
    fit(model, x, max_steps=4, lr=1e-2, batch_size=16, patience=None, seed=0)
    assert rates == pytest.approx([1e-2, 1e-2 * (1 + math.cos(math.pi / 4)) / 2, 5e-3,
                                   1e-2 * (1 + math.cos(3 * math.pi / 4)) / 2])