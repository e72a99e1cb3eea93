"""dgm.plot runs headless, checks its inputs, and gets the maths right."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython.display import HTML  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from dgm import plot  # noqa: E402
from dgm.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def std_normal_2d(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2).sum(dim=1) - math.log(2 * math.pi)


# ---------------------------------------------------------------- image_grid
def test_image_grid_integer_levels():
    x = torch.randint(0, 17, (20, 1, 8, 8))
    ax = plot.image_grid(x, nrow=5, levels=17, title="digits")
    assert isinstance(ax, Axes)
    img = ax.get_images()[0].get_array()
    assert img.min() >= 0.0 and img.max() <= 1.0
    # 5 per row, 4 rows of 8 px with 1 px padding around each
    assert img.shape == (4 * 9 + 1, 5 * 9 + 1)
    assert ax.get_title() == "digits"
    assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0


def test_image_grid_integer_levels_default_to_max_and_scale():
    x = torch.zeros(2, 1, 3, 3, dtype=torch.int64)
    x[0, 0, 1, 1] = 4
    ax = plot.image_grid(x, nrow=2)
    img = np.asarray(ax.get_images()[0].get_array())
    assert img.max() == pytest.approx(1.0)  # the largest level is white


def test_image_grid_accepts_nhw_float_numpy_and_bool():
    plot.image_grid(np.random.rand(6, 28, 28).astype(np.float32), nrow=3)
    plot.image_grid(torch.rand(4, 1, 5, 5) > 0.5)


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (torch.rand(4, 2), {}, "shape"),
        (torch.rand(4, 3, 8, 8), {}, "shape"),
        (torch.rand(0, 1, 8, 8), {}, "empty"),
        (torch.rand(4, 1, 8, 8) * 5, {}, r"\[0, 1\]"),
        (torch.full((2, 1, 4, 4), float("nan")), {}, "NaN"),
        (torch.randint(0, 17, (4, 1, 8, 8)), {"levels": 2}, "levels=2"),
        (torch.randint(0, 17, (4, 1, 8, 8)), {"levels": 1}, ">= 2"),
        (torch.rand(4, 1, 8, 8), {"nrow": 0}, "nrow"),
    ],
)
def test_image_grid_rejects_bad_input(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot.image_grid(images, **kwargs)


def test_image_grid_rejects_non_axes():
    with pytest.raises(TypeError, match="Axes"):
        plot.image_grid(torch.rand(2, 1, 4, 4), ax="not an axes")


# ----------------------------------------------------------------- scatter2d
def test_scatter2d_equal_aspect_and_limits():
    ax = plot.scatter2d(torch.randn(100, 2), lim=3.0, title="pts", color="C3")
    assert ax.get_xlim() == (-3.0, 3.0) and ax.get_ylim() == (-3.0, 3.0)
    assert ax.get_aspect() == 1.0
    ax = plot.scatter2d(np.random.randn(10, 2), lim=(-1, 2))
    assert ax.get_xlim() == (-1.0, 2.0)


@pytest.mark.parametrize(
    "points, lim, match",
    [(torch.randn(10, 3), None, r"\(N, 2\)"), (torch.randn(10), None, r"\(N, 2\)"),
     (torch.randn(10, 2), -1.0, "half-width"), (torch.randn(10, 2), (2, 1), "lo < hi")],
)
def test_scatter2d_rejects_bad_input(points, lim, match):
    with pytest.raises(ValueError, match=match):
        plot.scatter2d(points, lim=lim)


# ------------------------------------------------------ densities on a grid
def test_grid_log_prob_standard_gaussian_integrates_to_one():
    xs, ys, logp = plot.grid_log_prob(std_normal_2d, lim=(-5.0, 5.0), resolution=201)
    assert xs.shape == (201,) and ys.shape == (201,) and logp.shape == (201, 201)
    mass = np.exp(logp).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert mass == pytest.approx(1.0, rel=0.01)


def test_grid_log_prob_orientation_rows_are_y():
    def shifted(x):  # a narrow Gaussian at (2, -1)
        return -((x[:, 0] - 2) ** 2 + (x[:, 1] + 1) ** 2) / (2 * 0.1**2)

    xs, ys, logp = plot.grid_log_prob(shifted, lim=4.0, resolution=81)
    i, j = np.unravel_index(np.argmax(logp), logp.shape)
    assert xs[j] == pytest.approx(2.0, abs=0.1)
    assert ys[i] == pytest.approx(-1.0, abs=0.1)


def test_grid_log_prob_chunks_and_module_device():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def log_prob(self, x):
            return std_normal_2d(x) * self.scale

    calls = []
    model = Model()

    def counting(x):
        calls.append(len(x))
        return model.log_prob(x)

    _, _, a = plot.grid_log_prob(counting, lim=3.0, resolution=50, chunk=1000)
    assert max(calls) <= 1000 and sum(calls) == 2500
    _, _, b = plot.grid_log_prob(model.log_prob, lim=3.0, resolution=50)  # no grad needed
    np.testing.assert_allclose(a, b)


def test_grid_log_prob_rejects_bad_input():
    with pytest.raises(TypeError, match="callable"):
        plot.grid_log_prob("not a function")
    with pytest.raises(ValueError, match="resolution"):
        plot.grid_log_prob(std_normal_2d, resolution=1)
    with pytest.raises(ValueError, match=r"shape \(\d+,\)"):
        plot.grid_log_prob(lambda x: x, resolution=10)
    with pytest.raises(ValueError, match="NaN"):
        plot.grid_log_prob(lambda x: torch.full((len(x),), float("nan")), resolution=10)
    with pytest.raises(ValueError, match="lim"):
        plot.grid_log_prob(std_normal_2d, lim=(1.0, 1.0))


def test_density_heatmap_draws_density_not_log():
    ax = plot.density_heatmap(std_normal_2d, lim=3.0, resolution=60, title="N(0, I)", cmap="magma")
    img = np.asarray(ax.get_images()[0].get_array())
    assert img.shape == (60, 60)
    assert img.max() == pytest.approx(1 / (2 * math.pi), rel=0.02)
    assert img.min() >= 0.0
    assert ax.get_title() == "N(0, I)"


# --------------------------------------------------------------- loss_curves
def test_loss_curves_plots_train_val_and_best_step():
    h = History(
        train=[(10, {"loss": 3.0, "kl": 0.5}), (20, {"loss": 2.5, "kl": 0.6}), (30, {"loss": 2.4, "kl": 0.7})],
        val=[(0, 3.5), (10, 3.1), (20, 2.7), (30, 2.8)],
        best_step=20,
    )
    ax = plot.loss_curves(h, title="training")
    labels = [line.get_label() for line in ax.get_lines()]
    assert "train loss" in labels and "train kl" in labels and "validation" in labels
    assert any(label.startswith("best step") for label in labels)
    assert ax.get_title() == "training"


def test_loss_curves_without_validation():
    ax = plot.loss_curves(History(train=[(1, {"d_loss": 1.0, "g_loss": 2.0})]))
    assert len(ax.get_lines()) == 2


def test_loss_curves_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        plot.loss_curves(History())
    with pytest.raises(TypeError, match="History"):
        plot.loss_curves({"train": []})


# ---------------------------------------------------------------- animations
def test_animate_and_animation_html():
    fig, ax = plt.subplots(figsize=(2, 2))
    seen = []

    def draw(i):
        seen.append(i)
        ax.clear()
        ax.plot([0, 1], [0, i])

    anim = plot.animate(draw, n_frames=3, fig=fig, interval=50)
    assert isinstance(anim, FuncAnimation)
    html = plot.animation_html(anim)
    assert isinstance(html, HTML)
    assert "<script" in html.data and "data:image/png;base64" in html.data
    assert "http://" not in html.data and "https://" not in html.data  # self-contained
    assert 'class="fa' not in html.data and "\u25b6" in html.data  # icons are plain characters
    assert {0, 1, 2} <= set(seen)
    assert not plt.fignum_exists(fig.number)  # closed, so not shown twice


def test_animate_rejects_bad_input():
    fig = plt.figure()
    with pytest.raises(TypeError, match="callable"):
        plot.animate(None, 3, fig)
    with pytest.raises(ValueError, match="n_frames"):
        plot.animate(lambda i: None, 0, fig)
    with pytest.raises(TypeError, match="Figure"):
        plot.animate(lambda i: None, 3, fig.add_subplot())
    with pytest.raises(TypeError, match="FuncAnimation"):
        plot.animation_html("not an animation")


# ----------------------------------------------------------------- model_map
def test_families_keys_and_chapters():
    assert list(plot.FAMILIES) == [
        "independent", "autoregressive", "flow", "continuous_flow", "vae", "diffusion", "markov", "gan",
        "markov_sampler",
    ]
    chapters = {k: f.chapter for k, f in plot.FAMILIES.items()}
    assert chapters == {
        "independent": 1, "autoregressive": 2, "flow": 5, "continuous_flow": 7, "vae": 3, "diffusion": 6,
        "markov": 7, "gan": 4, "markov_sampler": 7,
    }
    name, chapter, examples = plot.FAMILIES["vae"]
    assert isinstance(name, str) and chapter == 3 and examples


@pytest.mark.parametrize("highlight", [None, "vae", ["gan", "flow"], ("diffusion",), list(plot.FAMILIES)])
def test_model_map_draws(highlight):
    ax = plot.model_map(highlight=highlight)
    texts = [t.get_text() for t in ax.texts]
    for fam in plot.FAMILIES.values():
        assert fam.name in texts
    for n in (1, 2, 3, 4, 5, 6):
        assert f"ch. {n}" in texts
    assert not ax.axison


def test_model_map_highlight_changes_colours():
    def leaf_colours(ax):
        return [p.get_facecolor() for p in ax.patches]

    plain = leaf_colours(plot.model_map())
    lit = leaf_colours(plot.model_map(highlight="gan"))
    assert plain != lit


def test_model_map_on_given_axes():
    fig, ax = plt.subplots(figsize=(11, 6))
    assert plot.model_map("flow", ax=ax) is ax


@pytest.mark.parametrize("bad", ["cat", ["vae", "pixelcnn"], "VAE"])
def test_model_map_rejects_unknown_key(bad):
    with pytest.raises(ValueError, match="valid keys: independent, autoregressive") as err:
        plot.model_map(highlight=bad)
    assert "markov_sampler" in str(err.value)


def test_html_table_checks_row_lengths_and_escapes_the_header(capsys):
    from dgm.plot import html_table

    with pytest.raises(ValueError, match="row 1 has 1 entries but the header has 2"):
        html_table(["a", "b"], [["1", "2"], ["3"]])
    html_table(["<x>", "y"], [["1", "2"]])  # displays without error outside a notebook


def test_show_source_displays_package_code(capsys):
    from dgm.baselines import IndependentPixels
    from dgm.plot import show_source

    show_source(IndependentPixels.initialize)
    assert "def initialize" in capsys.readouterr().out


def test_model_map_notes_replace_the_examples_line():
    ax = plot.model_map(notes={"vae": "measured: 90.1 nats"})
    texts = [t.get_text() for t in ax.texts]
    assert "measured: 90.1 nats" in texts
    assert plot.FAMILIES["vae"].examples not in texts
    assert plot.FAMILIES["gan"].examples in texts
    with pytest.raises(ValueError, match="unknown family keys"):
        plot.model_map(notes={"transformer": "x"})
