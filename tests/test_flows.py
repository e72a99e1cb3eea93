"""Chapter 5's flows: every layer inverts, its log-determinant is the autograd Jacobian's,
MAF/IAF are triangular, 2-D densities integrate to one, the coupling matches nflows',
dequantisation gives a valid bound, the CLI trains and reloads them, inputs are checked."""

import json
import math
import subprocess
import sys

import pytest
import torch

from dgm import data, registry, run
from dgm.flows import (
    IAF, MAF, ActNorm, AffineCoupling, Composition, GaussianMixtureBase, IAFLayer, Logit, LULinear, MAFLayer,
    MarginalCDF, Permutation, Planar, RealNVP, SplineCoupling, alternating_mask, bounded_log_scale,
    rational_quadratic_spline,
)
from dgm.train import fit

DIM = 5


def _perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Move every parameter off its (often identity) initial value, so the tests see a real map."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _layers(dim: int = DIM) -> dict:
    """One of every layer type, and a stack of them, with random (non-identity) parameters."""
    torch.manual_seed(0)
    ordering = torch.randperm(dim)
    layers = {
        "coupling": AffineCoupling(alternating_mask((dim,), flip=False), hidden_size=16),
        "coupling-flipped": AffineCoupling(alternating_mask((dim,), flip=True), hidden_size=16),
        "actnorm": ActNorm(dim),
        "permutation": Permutation(dim, seed=3),
        "lu": LULinear(dim, seed=1),
        "maf": MAFLayer(dim, hidden_size=16, ordering=ordering),
        "iaf": IAFLayer(dim, hidden_size=16, ordering=ordering),
        "planar": Planar(dim, seed=2),
        "spline": SplineCoupling(alternating_mask((dim,), flip=True), hidden_size=16, num_bins=5, tail_bound=2.0),
    }
    layers["stack"] = Composition([AffineCoupling(alternating_mask((dim,), flip=False), hidden_size=16),
                                   ActNorm(dim), LULinear(dim, seed=4), MAFLayer(dim, hidden_size=16),
                                   Planar(dim, seed=5), AffineCoupling(alternating_mask((dim,), True), 16)])
    # smaller perturbations where large ones make maps no trained flow makes: six random layers in a
    # row stretch the points to |z| ~ 1e3; a spline with raw outputs ~5 gets bins whose slopes differ
    # 1000-fold, where float32's rounding of z alone moves the inverse by 1e-4
    gentle = {"stack": 0.15, "spline": 0.2}
    return {name: _perturb(layer, seed=i, scale=gentle.get(name, 0.5))
            for i, (name, layer) in enumerate(layers.items())}


LAYER_NAMES = list(_layers())
UNIT_INTERVAL = ("logit", "marginal")  # layers whose inputs lie in (0, 1)


def _unit_interval_layer(name: str) -> torch.nn.Module:
    if name == "logit":
        return Logit(0.05)
    return _perturb(MarginalCDF(DIM, 4), seed=9, scale=1.0)


def _inputs(name: str, n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if name in UNIT_INTERVAL:
        return torch.rand(n, DIM, generator=gen, dtype=dtype)
    return torch.randn(n, DIM, generator=gen, dtype=dtype)


@pytest.mark.parametrize("name", LAYER_NAMES + list(UNIT_INTERVAL))
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_inverse_undoes_forward(name, dtype, tol):
    layer = _unit_interval_layer(name) if name in UNIT_INTERVAL else _layers()[name]
    layer = layer.to(dtype)
    x = _inputs(name, 64, 1, dtype)
    with torch.no_grad():
        z, logdet = layer(x)
        back, logdet_back = layer.inverse(z)
    assert not torch.allclose(z, x, atol=1e-3), "the layer is the identity: the test would prove nothing"
    scale = 1 + x.abs()  # a relative bound: float32 has ~1e-7 relative precision
    assert ((back - x).abs() / scale).max() <= tol
    assert (logdet + logdet_back).abs().max() <= tol * 10, "inverse's log-det must be minus forward's"


def _jacobian_logdets(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det| of the autograd Jacobian of ``fn`` at each row of ``x``."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], row)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


@pytest.mark.parametrize("name", LAYER_NAMES + list(UNIT_INTERVAL))
def test_logdet_equals_slogdet_of_the_autograd_jacobian(name):
    layer = (_unit_interval_layer(name) if name in UNIT_INTERVAL else _layers()[name]).double()
    x = _inputs(name, 6, 2, torch.float64)
    _, logdet = layer(x)
    assert torch.allclose(logdet, _jacobian_logdets(layer, x), rtol=0, atol=1e-8)
    z, _ = layer(x)
    _, logdet_inverse = layer.inverse(z)
    assert torch.allclose(logdet_inverse, _jacobian_logdets(layer.inverse, z), rtol=0, atol=1e-8)


def test_the_jacobian_check_would_catch_a_wrong_logdet():
    """The comparison above fails for a layer that forgets the kept half is unscaled."""
    layer = _layers()["coupling"].double()
    x = torch.randn(4, DIM, dtype=torch.float64)
    shift, raw = layer.net(x * layer.mask).chunk(2, dim=1)
    wrong = bounded_log_scale(raw, layer.scale_bound).sum(1)  # log-scales of the kept half included
    assert not torch.allclose(wrong, _jacobian_logdets(layer, x), atol=1e-3)


@pytest.mark.parametrize("cls", [MAFLayer, IAFLayer])
def test_autoregressive_jacobians_are_triangular_in_their_ordering(cls):
    torch.manual_seed(0)
    ordering = torch.tensor([3, 0, 4, 1, 2])
    layer = _perturb(cls(DIM, hidden_size=16, ordering=ordering)).double()
    x = torch.randn(DIM, dtype=torch.float64)
    for fn in (layer, layer.inverse):
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], x)
        permuted = jac[ordering][:, ordering]  # rows and columns in the visiting order
        assert torch.equal(permuted.triu(1), torch.zeros_like(permuted)), "z_i depends on a later x_j"
        assert (permuted.tril(-1).abs() > 1e-8).any(), "no dependencies at all: nothing tested"


def _grid_mass(model, lim: float = 6.0, n: int = 601) -> float:
    ticks = torch.linspace(-lim, lim, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        density = torch.cat([model.log_prob(chunk).exp() for chunk in torch.split(points, 20_000)])
    return float(density.sum() * (ticks[1] - ticks[0]) ** 2)


NSF = lambda shape, **kw: RealNVP(shape, coupling="spline", **kw)  # noqa: E731
MIXTURE_BASE = lambda shape, **kw: RealNVP(shape, base_components=5, **kw)  # noqa: E731


@pytest.mark.parametrize("cls", [RealNVP, MAF, IAF, NSF, MIXTURE_BASE],
                         ids=["realnvp", "maf", "iaf", "nsf", "realnvp-mixture-base"])
def test_a_2d_flow_density_integrates_to_one(cls):
    torch.manual_seed(0)
    model = cls((2,), num_blocks=3, hidden_size=16).double()
    model.initialize(data.load("ring", "train", n=500).x.double())
    _perturb(model, scale=0.1)
    assert abs(_grid_mass(model, lim=10.0, n=801) - 1) < 0.01


def test_the_integral_check_would_catch_a_missing_logdet():
    torch.manual_seed(0)
    model = RealNVP((2,), num_blocks=3, hidden_size=16).double()
    model.initialize(data.load("ring", "train", n=500).x.double())
    _perturb(model, scale=0.1)

    class NoLogdet(torch.nn.Module):
        def forward(self, x):
            z, _ = model.flow(x)
            return -0.5 * (z.pow(2).sum(1) + 2 * math.log(2 * math.pi))

    assert abs(_grid_mass(model, lim=10.0, n=801) - 1) < 0.01
    no_logdet = type("M", (), {"log_prob": lambda self, x: NoLogdet()(x)})()
    assert abs(_grid_mass(no_logdet, lim=10.0, n=801) - 1) > 0.05


def test_mixture_base_matches_torch_distributions_and_samples_its_components():
    torch.manual_seed(0)
    base = _perturb(GaussianMixtureBase(3, components=4).double(), scale=0.7)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=base.logits),
        torch.distributions.Independent(torch.distributions.Normal(base.means, base.log_scales.exp()), 1))
    z = 2 * torch.randn(50, 3, dtype=torch.float64)
    assert torch.allclose(base.log_prob(z), mixture.log_prob(z), atol=1e-10)
    with torch.no_grad():
        draws = base.sample(200_000)
        weights = torch.softmax(base.logits, 0)
    assert draws.shape == (200_000, 3)
    expected_mean = (weights[:, None] * base.means).sum(0).detach()
    spread = float(mixture.variance.detach().max().sqrt())
    assert torch.allclose(draws.mean(0), expected_mean, atol=4 * spread / 200_000 ** 0.5)
    # the log-density gradient reaches every parameter (the mixture is learned)
    base.log_prob(z).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in base.parameters())


def test_mixture_base_means_start_on_training_points_in_z():
    x = data.load("ring", "train", n=500).x
    model = RealNVP((2,), num_blocks=2, hidden_size=8, base_components=6)
    model.initialize(x)
    z, _ = model.flow(x[:2000])
    # every mean is the image of a training point; a model sampled right away lands near the data
    gaps = (model.mixture.means[:, None, :] - z[None]).norm(dim=2).detach()  # (components, N)
    assert gaps.min(1).values.max() < 1e-6
    assert model.sample(7).shape == (7, 2)
    with pytest.raises(ValueError, match="base_components must be >= 0"):
        RealNVP((2,), base_components=-1)
    with pytest.raises(ValueError, match="at least 6 examples"):
        model.mixture.initialize_from(torch.randn(3, 2))


# ---------------------------------------------------------------------------
# oracle: nflows' affine coupling
# ---------------------------------------------------------------------------
def test_affine_coupling_matches_nflows():
    """Same conditioner weights and mask; nflows' own scale function is replaced by ours
    (it uses sigmoid(raw + 2) + 1e-3, ours is exp(bounded tanh)): everything else is theirs."""
    from nflows.transforms.coupling import AffineCouplingTransform

    torch.manual_seed(0)
    dim = 6
    mask = torch.tensor([1.0, 0, 0, 1, 1, 0])
    ours = _perturb(AffineCoupling(mask, hidden_size=32, scale_bound=1.5)).double()
    kept = mask.bool()
    free_index = torch.nonzero(~kept).flatten()

    class OurNetAsTheirs(torch.nn.Module):
        """nflows gives the net the identity features only and wants [shift, raw scale] of the others."""

        def __init__(self, in_features, out_features):
            super().__init__()

        def forward(self, identity_features, context=None):
            full = identity_features.new_zeros(len(identity_features), dim)
            full[:, kept] = identity_features
            shift, raw = ours.net(full).chunk(2, dim=1)
            return torch.cat([shift[:, free_index], raw[:, free_index]], 1)

    class OurScale(AffineCouplingTransform):
        def _scale_and_shift(self, params):
            n = self.num_transform_features
            return torch.exp(bounded_log_scale(params[:, n:], 1.5)), params[:, :n]

    # nflows: mask > 0 marks the features it transforms, the opposite of ours
    theirs = OurScale(torch.where(kept, -1, 1), lambda i, o: OurNetAsTheirs(i, o)).double()
    x = torch.randn(32, dim, dtype=torch.float64)
    with torch.no_grad():
        z_ours, ld_ours = ours(x)
        z_theirs, ld_theirs = theirs(x)
        x_ours, ild_ours = ours.inverse(z_ours)
        x_theirs, ild_theirs = theirs.inverse(z_theirs)
    assert torch.allclose(z_ours, z_theirs, atol=1e-12) and torch.allclose(ld_ours, ld_theirs, atol=1e-12)
    assert torch.allclose(x_ours, x_theirs, atol=1e-12) and torch.allclose(ild_ours, ild_theirs, atol=1e-12)
    assert not torch.allclose(z_ours[:, ~kept], x[:, ~kept]), "the coupling did nothing"


@pytest.mark.parametrize("inverse", [False, True])
def test_rational_quadratic_spline_matches_nflows(inverse):
    """nflows pads the inner slopes with the constant that makes softplus give 1 - min_slope;
    ours shifts every raw slope by it (so raw 0 is slope 1): the same map after that shift."""
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    gen = torch.Generator().manual_seed(0)
    shape, bins, bound = (40, 3), 6, 3.0
    x = 2.5 * torch.randn(shape, generator=gen, dtype=torch.float64)  # some outside the bound: identity tails
    widths, heights = (torch.randn(*shape, bins, generator=gen, dtype=torch.float64) for _ in range(2))
    slopes = torch.randn(*shape, bins - 1, generator=gen, dtype=torch.float64)
    ours = rational_quadratic_spline(x, widths, heights, slopes, bound, inverse=inverse)
    shift = math.log(math.expm1(1 - 1e-3))
    theirs = unconstrained_rational_quadratic_spline(x, widths, heights, slopes + shift, inverse=inverse,
                                                     tails="linear", tail_bound=bound)
    assert torch.allclose(ours[0], theirs[0], atol=1e-12) and torch.allclose(ours[1], theirs[1], atol=1e-12)
    assert (x.abs() > bound).any() and not torch.allclose(ours[0], x), "tails and inside both exercised"


# ---------------------------------------------------------------------------
# dequantisation
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("marginals, alpha", [(True, 0.0), (False, 0.0), (False, 0.05)])
def test_dequantised_bound_is_below_the_exact_discrete_log_likelihood(marginals, alpha):
    """On 2 pixels with 3 levels, P(x) = integral of p over the unit cell (numerically);
    the dequantisation bound E_u[log p(x+u)] must not exceed log P(x). The Logit margin alpha > 0
    maps the cube onto a box, not onto the whole plane, so some base mass is lost: the model is
    sub-normalised, which only makes its bound more conservative."""
    torch.manual_seed(0)
    # (the marginal layer maps the cube onto the plane, so a strongly perturbed flow's heavy tails become
    # integrable spikes at the cube's edges that the midpoint rule cannot resolve: perturb it less)
    model = _perturb(RealNVP((2,), num_levels=3, num_blocks=2, hidden_size=8, marginals=marginals, alpha=alpha),
                     scale=0.05 if marginals else 0.3).double()
    n = 200
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    cell = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    total = 0.0
    with torch.no_grad():
        for a in range(3):
            for b in range(3):
                x = torch.tensor([a, b], dtype=torch.float64)
                log_p = model.log_prob(x + cell)
                exact = float(log_p.exp().mean().log())  # midpoint rule over the unit cell
                bound = float(log_p.mean())              # E_u[log p(x + u)]
                assert bound <= exact + 1e-9
                total += math.exp(exact)
    # MarginalCDF and the logit with alpha = 0 map the cube onto the whole plane (total 1; the midpoint
    # rule misses some of the mass the logit piles at the cube's edges); alpha > 0 maps it onto a box
    # (total < 1): never more than 1
    assert total < 1 + 1e-6 and (alpha > 0 or total > 0.9)
    if marginals:
        assert abs(total - 1) < 1e-2


def test_digits_evaluate_reports_an_honestly_named_bound():
    model = RealNVP((1, 8, 8), num_levels=17, num_blocks=2, hidden_size=16)
    test = data.load("digits", "test").x[:50]
    metrics = model.evaluate(test, draws=2)
    assert set(metrics) == {"nll_bound_nats", "bpd_bound"}
    assert metrics["bpd_bound"] == pytest.approx(metrics["nll_bound_nats"] / (64 * math.log(2)))
    assert model.evaluate(test, draws=2) == metrics, "the noise draws are seeded"
    samples = model.sample(4)
    assert samples.shape == (4, 1, 8, 8) and samples.dtype == torch.int64
    assert samples.min() >= 0 and samples.max() <= 16


def test_marginal_layer_alone_is_the_independent_pixel_model():
    """Before training the couplings (zero-initialised) and with ActNorm/LU left at the identity,
    a dequantised flow with MarginalCDF scores exactly what independent categorical pixels
    with the same probabilities score: dequantising a piecewise-constant density loses nothing."""
    train = data.load("digits", "train").x
    model = RealNVP((1, 8, 8), num_levels=17, num_blocks=1, hidden_size=8, lu=False).double()
    model.prep.initialize_from((train.flatten(1).double() + 0.5) / 17)
    levels = data.load("digits", "test").x[:20]
    probs = model.prep.logits.double().softmax(-1)  # (64, 17)
    exact = probs.log().gather(1, levels.flatten(1).T).sum(0)  # log P(x) of independent pixels
    for draw in range(3):
        torch.manual_seed(draw)
        assert torch.allclose(model.dequantized_log_likelihood(levels), exact, atol=1e-6)


@pytest.mark.slow
def test_a_short_digits_run_beats_the_uniform_distribution():
    train = data.load("digits", "train").x
    torch.manual_seed(0)
    model = RealNVP((1, 8, 8), num_levels=17, num_blocks=2, hidden_size=32)
    fit(model, train, data.load("digits", "val").x, max_steps=150, batch_size=64, lr=2e-3, seed=0,
        progress=False)
    nll = model.evaluate(data.load("digits", "test").x, draws=2)["nll_bound_nats"]
    assert nll < 64 * math.log(17) - 30, nll  # uniform over 17 levels is 181.3 nats


# ---------------------------------------------------------------------------
# sampling costs, training, the CLI, input checks
# ---------------------------------------------------------------------------
def test_maf_samples_sequentially_and_iaf_evaluates_sequentially():
    """Counted MADE passes, not timings: MAF's density is 1 pass per layer and its sampling D;
    IAF the reverse."""
    calls = {"n": 0}

    def count(module, args, out):
        calls["n"] += 1

    dim = 4
    for cls, density_passes, sample_passes in ((MAF, 1, dim + 1), (IAF, dim + 1, 1)):
        model = cls((dim,), num_blocks=1, hidden_size=8)
        handle = model.flow.layers[1].made.register_forward_hook(count)
        calls["n"] = 0
        model.log_prob(torch.randn(3, dim))
        assert calls["n"] == density_passes, cls.__name__
        calls["n"] = 0
        model.sample(3)
        assert calls["n"] == sample_passes == model.sampling_passes(), cls.__name__
        handle.remove()


def test_maf_and_iaf_with_the_same_weights_are_inverse_maps():
    torch.manual_seed(0)
    maf = _perturb(MAFLayer(DIM, hidden_size=16)).double()
    iaf = IAFLayer(DIM, hidden_size=16).double()
    iaf.load_state_dict(maf.state_dict())
    x = torch.randn(8, DIM, dtype=torch.float64)
    assert torch.allclose(maf(x)[0], iaf.inverse(x)[0]) and torch.allclose(maf.inverse(x)[0], iaf(x)[0])


@pytest.mark.slow
def test_training_on_ring_lowers_the_nll_and_samples_have_the_data_shape():
    train, val = data.load("ring", "train", n=2000), data.load("ring", "val", n=500)
    torch.manual_seed(0)
    model = RealNVP((2,), num_blocks=4, hidden_size=32)
    model.initialize(train.x)
    with torch.no_grad():
        before = float(-model.log_prob(val.x).mean())
    fit(model, train.x, val.x, max_steps=300, batch_size=256, lr=3e-3, seed=0, progress=False)
    with torch.no_grad():
        after = float(-model.log_prob(val.x).mean())
    assert after < before - 0.3, (before, after)
    assert model.sample(7).shape == (7, 2)


@pytest.mark.slow
def test_cli_trains_and_reloads_a_flow(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dgm", "train", "maf", "--data", "moons", "--steps", "30", "--seed", "0",
         "--out", str(tmp_path), "--set", "num_blocks=2", "hidden_size=16"],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"] == "maf" and "test_nll_nats" in result and "entropy_nats" in result
    (ckpt,) = tmp_path.glob("*.pt")
    model, saved = run.load_checkpoint(str(ckpt))
    nll = float(model.evaluate(data.load("moons", "test").x)["nll_nats"])
    assert nll == pytest.approx(result["test_nll_nats"], rel=1e-5)


@pytest.mark.parametrize("name", ["realnvp", "nsf", "maf", "iaf"])
def test_registry_builds_each_flow_for_points_and_digits(name):
    for data_name in ("ring", "digits"):
        info = data.load(data_name, "val").info()
        model = registry.build(name, info, num_blocks=1, hidden_size=8)
        x = data.load(data_name, "val").x[:5]
        assert model.loss(x).ndim == 0


def test_helpful_errors():
    model = RealNVP((2,), num_blocks=1, hidden_size=8)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model.log_prob(torch.randn(3, 3))
    with pytest.raises(ValueError, match="dequantisation is for integer images"):
        model.dequantized_log_likelihood(torch.randn(3, 2))
    images = RealNVP((1, 8, 8), num_levels=17, num_blocks=1, hidden_size=8)
    with pytest.raises(ValueError, match="pixel levels must lie in 0..16"):
        images.loss(torch.full((2, 1, 8, 8), 17))
    with pytest.raises(ValueError, match="both values present"):
        AffineCoupling(torch.ones(4))
    with pytest.raises(ValueError, match="positive integer"):
        RealNVP((2,), num_blocks=0)
    with pytest.raises(ValueError, match="at least 2 examples"):
        ActNorm(2).initialize_from(torch.randn(1, 2))
    with pytest.raises(ValueError, match="alpha"):
        Logit(0.5)
    with pytest.raises(ValueError, match="coupling must be"):
        RealNVP((2,), coupling="cubic")
