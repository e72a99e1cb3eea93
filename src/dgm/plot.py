"""Plotting helpers shared by every chapter of the book.

Everything here draws with matplotlib onto an ``Axes`` (a new figure when
``ax`` is ``None``) and returns that ``Axes``, so cells can add titles or
combine panels. Nothing here calls ``plt.show()``; notebooks show figures as
usual. All functions work under the non-interactive ``Agg`` backend.

>>> from dgm import data, plot
>>> plot.image_grid(data.load("digits", "train").x[:32], levels=17)
>>> plot.density_heatmap(data.load("ring", "train").density.log_prob, lim=3.5)
>>> plot.model_map(highlight="vae")

Conventions
    Images are drawn with the ``gray`` colormap: 0 is black and the largest
    value is white, so digits appear as white ink on a black background in
    every chapter (MNIST's own convention; scikit-learn's 8x8 digits look the
    same way here).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import matplotlib
import matplotlib.colors
import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes
from matplotlib.patches import FancyBboxPatch

__all__ = [
    "FAMILIES",
    "Family",
    "image_grid",
    "scatter2d",
    "grid_log_prob",
    "density_heatmap",
    "loss_curves",
    "animate",
    "animation_html",
    "model_map",
]

ArrayLike = Any  # a torch.Tensor, a numpy array or anything np.asarray accepts


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax
    _, ax = plt.subplots(figsize=figsize)
    return ax


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """A detached CPU numpy copy of a tensor or array-like."""
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - depends on the odd input
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}") from exc


def _limits(lim: float | Sequence[float] | None, name: str = "lim") -> tuple[float, float] | None:
    """``None``, a half-width ``a`` (-> ``(-a, a)``) or a pair ``(lo, hi)``."""
    if lim is None:
        return None
    if isinstance(lim, (int, float)) and not isinstance(lim, bool):
        a = float(lim)
        if not a > 0:
            raise ValueError(f"{name} as one number is a half-width and must be > 0, got {lim}")
        return (-a, a)
    try:
        lo, hi = (float(v) for v in lim)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a positive number or a pair (lo, hi), got {lim!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must satisfy lo < hi with finite values, got {lim!r}")
    return (lo, hi)


# ---------------------------------------------------------------------------
# images and points
# ---------------------------------------------------------------------------
def image_grid(
    images: ArrayLike,
    nrow: int = 8,
    levels: int | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Show a batch of grey images as one grid.

    Args:
        images: ``(N, 1, H, W)`` or ``(N, H, W)`` tensor or array. Integer (or
            bool) values are grey levels ``0..levels-1`` and are divided by
            ``levels - 1``; floats are taken to lie in ``[0, 1]`` (values
            slightly outside are clipped).
        nrow: images per row of the grid.
        levels: number of grey levels of integer data, e.g. 17 for the 8x8
            digits (0..16) or 2 for binary images. ``None`` uses the largest
            value in ``images`` for integer data. Ignored for float data.
        ax: axes to draw on, or ``None`` for a new figure.
        title: optional axes title.

    Returns:
        The axes, with the grid drawn using the ``gray`` colormap (0 black,
        1 white) and no ticks.
    """
    from torchvision.utils import make_grid

    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    x = _to_numpy(images, "images")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(
            f"images must have shape (N, 1, H, W) or (N, H, W), got {tuple(x.shape)}; "
            f"for flat vectors reshape first, e.g. x.view(-1, 1, 8, 8)"
        )
    if x.shape[0] == 0:
        raise ValueError("images is empty: nothing to show")
    if x.dtype == np.bool_:
        x = x.astype(np.int64)
    if np.issubdtype(x.dtype, np.integer):
        if levels is None:
            top = int(x.max())
            levels = top + 1 if top > 0 else 2
        if isinstance(levels, bool) or int(levels) != levels or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if x.min() < 0 or x.max() > levels - 1:
            raise ValueError(
                f"integer images must lie in 0..{levels - 1} for levels={levels}, "
                f"got values in {int(x.min())}..{int(x.max())}"
            )
        x = x.astype(np.float32) / float(levels - 1)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError("images contain NaN or infinite values")
        if x.min() < -0.05 or x.max() > 1.05:
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]; "
                f"pass integer levels with levels=..., or rescale first"
            )
        x = np.clip(x, 0.0, 1.0)
    else:
        raise TypeError(f"images must be numeric, got dtype {x.dtype}")

    grid = make_grid(torch.from_numpy(x), nrow=int(nrow), padding=1, pad_value=0.35)[0].numpy()
    ax = _new_axes(ax, (min(1.0 * nrow, 10.0), min(1.0 * math.ceil(len(x) / nrow), 10.0)))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title)
    return ax


def scatter2d(
    points: ArrayLike,
    ax: Axes | None = None,
    s: float = 2.0,
    alpha: float = 0.5,
    title: str | None = None,
    lim: float | tuple[float, float] | None = None,
    color: Any = None,
) -> Axes:
    """Scatter plot of 2-D points with equal aspect.

    Args:
        points: ``(N, 2)`` tensor or array.
        ax: axes to draw on, or ``None`` for a new figure.
        s: marker size (points^2).
        alpha: marker opacity.
        title: optional axes title.
        lim: a half-width ``a`` (both axes ``[-a, a]``), a pair ``(lo, hi)``
            for both axes, or ``None`` for matplotlib's automatic limits.
        color: any matplotlib colour; ``None`` uses ``"C0"``.

    Returns:
        The axes.
    """
    p = _to_numpy(points, "points")
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(p.shape)}")
    limits = _limits(lim)
    ax = _new_axes(ax, (4.0, 4.0))
    ax.scatter(p[:, 0], p[:, 1], s=s, alpha=alpha, color="C0" if color is None else color, linewidths=0)
    if limits is not None:
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------
# densities on a 2-D grid
# ---------------------------------------------------------------------------
def _infer_device(fn: Callable) -> torch.device:
    """The device of the module a bound ``log_prob`` belongs to, else CPU."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        for tensor in (*owner.parameters(), *owner.buffers()):
            return tensor.device
    return torch.device("cpu")


def grid_log_prob(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    lim: float | tuple[float, float] = (-4.0, 4.0),
    resolution: int = 200,
    *,
    device: str | torch.device | None = None,
    chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2-D log-density on a square grid.

    Args:
        log_prob_fn: callable taking an ``(M, 2)`` float32 tensor and returning
            ``(M,)`` log-densities (e.g. ``model.log_prob`` or
            ``split.density.log_prob``). Called under ``torch.no_grad()``.
        lim: half-width ``a`` (grid on ``[-a, a]^2``) or ``(lo, hi)`` for both axes.
        resolution: number of grid points per axis (>= 2).
        device: where the grid tensor is built; ``None`` uses the device of
            the module ``log_prob_fn`` is bound to (CPU otherwise).
        chunk: at most this many points per call of ``log_prob_fn``.

    Returns:
        ``(xs, ys, logp)``: ``xs`` and ``ys`` are ``(resolution,)`` arrays of
        grid coordinates (both from ``lo`` to ``hi``); ``logp`` is a
        ``(resolution, resolution)`` float64 array with
        ``logp[i, j] = log p(xs[j], ys[i])`` (rows follow y, so
        ``imshow(..., origin="lower")`` draws it the right way up).
        ``exp(logp).sum() * dx * dy`` with ``dx = xs[1] - xs[0]`` approximates
        the probability mass inside the square.
    """
    if not callable(log_prob_fn):
        raise TypeError(f"log_prob_fn must be callable, got {type(log_prob_fn).__name__}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    lo, hi = _limits(lim)  # type: ignore[misc]
    xs = np.linspace(lo, hi, int(resolution))
    ys = np.linspace(lo, hi, int(resolution))
    gx, gy = np.meshgrid(xs, ys)  # gx[i, j] = xs[j], gy[i, j] = ys[i]
    dev = torch.device(device) if device is not None else _infer_device(log_prob_fn)
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)).to(dev)
    outs = []
    with torch.no_grad():
        for part in torch.split(pts, int(chunk)):
            out = log_prob_fn(part)
            if not torch.is_tensor(out):
                out = torch.as_tensor(np.asarray(out))
            if out.shape != (len(part),):
                raise ValueError(
                    f"log_prob_fn must map an ({len(part)}, 2) tensor to shape ({len(part)},), "
                    f"got {tuple(out.shape)}"
                )
            outs.append(out.detach().to("cpu", torch.float64))
    logp = torch.cat(outs).numpy().reshape(int(resolution), int(resolution))
    if np.isnan(logp).any() or np.isposinf(logp).any():
        raise ValueError("log_prob_fn returned NaN or +inf on the grid")
    return xs, ys, logp


def density_heatmap(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    lim: float | tuple[float, float] = (-4.0, 4.0),
    resolution: int = 200,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = "viridis",
) -> Axes:
    """Show ``p(x) = exp(log_prob_fn(x))`` of a 2-D model as a heat map.

    Args:
        log_prob_fn: callable mapping an ``(M, 2)`` float32 tensor to ``(M,)``
            log-densities (see :func:`grid_log_prob`).
        lim: half-width or ``(lo, hi)`` of the square shown.
        resolution: grid points per axis.
        ax: axes to draw on, or ``None`` for a new figure.
        title: optional axes title.
        cmap: matplotlib colormap name.

    Returns:
        The axes (equal aspect, the image is its first ``AxesImage``).
    """
    xs, ys, logp = grid_log_prob(log_prob_fn, lim, resolution)
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    ax = _new_axes(ax, (4.0, 4.0))
    ax.imshow(
        np.exp(logp),
        origin="lower",
        extent=(xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2),
        cmap=cmap,
        interpolation="nearest",
    )
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------
def loss_curves(history: Any, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Plot every logged training quantity and the validation score.

    Args:
        history: a :class:`dgm.train.History` (``train``: list of
            ``(step, {name: value})``, ``val``: list of ``(step, score)``,
            ``best_step``: step of the best validation score or ``None``).
        ax: axes to draw on, or ``None`` for a new figure.
        title: optional axes title.

    Returns:
        The axes, with one line per training quantity, the validation score
        as a dark line with markers, and a dotted vertical line at the best step.
    """
    for attr in ("train", "val"):
        if not hasattr(history, attr):
            raise TypeError(
                f"history must be a dgm.train.History (with .train and .val), got {type(history).__name__}"
            )
    train = list(history.train)
    val = list(history.val)
    if not train and not val:
        raise ValueError("history is empty: nothing was logged (did training run for at least one step?)")
    ax = _new_axes(ax, (6.0, 3.5))
    names: list[str] = []
    for _, values in train:
        for name in values:
            if name not in names:
                names.append(name)
    for k, name in enumerate(names):
        pts = [(s, d[name]) for s, d in train if name in d]
        ax.plot([s for s, _ in pts], [v for _, v in pts], color=f"C{k % 10}", lw=1.5, label=f"train {name}")
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], color="black", lw=1.5, marker="o", ms=3, label="validation")
    best = getattr(history, "best_step", None)
    if best is not None:
        ax.axvline(best, color="0.4", ls=":", lw=1.2, label=f"best step ({best})")
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------
# animations
# ---------------------------------------------------------------------------
def animate(
    draw_frame: Callable[[int], Any],
    n_frames: int,
    fig: matplotlib.figure.Figure,
    interval: int = 200,
) -> FuncAnimation:
    """Build an animation by redrawing ``fig`` once per frame.

    Args:
        draw_frame: called as ``draw_frame(i)`` for ``i = 0..n_frames-1``; it
            updates the artists of ``fig`` (e.g. ``ax.clear()`` and redraw).
        n_frames: number of frames (>= 1).
        fig: the figure the frames are drawn into.
        interval: milliseconds between frames.

    Returns:
        A :class:`matplotlib.animation.FuncAnimation`; show it in a notebook
        with :func:`animation_html`.
    """
    if not callable(draw_frame):
        raise TypeError(f"draw_frame must be callable as draw_frame(i), got {type(draw_frame).__name__}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if not isinstance(fig, matplotlib.figure.Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if interval <= 0:
        raise ValueError(f"interval must be positive (milliseconds), got {interval}")

    def update(i: int) -> list:
        draw_frame(i)
        return []

    return FuncAnimation(fig, update, frames=int(n_frames), interval=interval, blit=False, repeat=True)


def animation_html(anim: FuncAnimation):
    """Render an animation as self-contained JavaScript HTML (frames embedded).

    Works in live notebooks and in the static book (no external scripts).
    Closes the animation's figure so the notebook does not also show its last
    frame as a still image.

    Returns:
        ``IPython.display.HTML``.
    """
    from IPython.display import HTML

    if not isinstance(anim, FuncAnimation):
        raise TypeError(f"anim must be a matplotlib FuncAnimation (see dgm.plot.animate), got {type(anim).__name__}")
    html = _offline_jshtml(anim.to_jshtml())
    plt.close(anim._fig)
    return HTML(html)


# matplotlib's player draws its buttons with Font Awesome 4 loaded from a CDN;
# the book must not load external assets, so the icons become plain characters.
_PLAYER_ICONS = {
    "minus": "\u2212",  # slower
    "fast-backward": "\u21e4",  # first frame
    "step-backward": "\u2039",
    "play fa-flip-horizontal": "\u25c0",  # play backwards
    "pause": "\u275a\u275a",
    "play": "\u25b6",
    "step-forward": "\u203a",
    "fast-forward": "\u21e5",  # last frame
    "plus": "+",  # faster
}


def _offline_jshtml(html: str) -> str:
    """Drop the CDN stylesheet from matplotlib's JS player and inline its icons."""
    html = re.sub(r"<link[^>]*href=\"https?://[^\"]*\"[^>]*>", "", html)

    def icon(match: re.Match) -> str:
        return _PLAYER_ICONS.get(match.group(1), "?")

    return re.sub(r'<i class="fa fa-([a-z -]+?)"></i>', icon, html)


# ---------------------------------------------------------------------------
# the map of model families
# ---------------------------------------------------------------------------
class Family(NamedTuple):
    """One leaf of the map: display name, chapter of the book (or None), examples."""

    name: str
    chapter: int | None
    examples: str


#: The leaves of :func:`model_map`, in drawing order (top to bottom).
FAMILIES: dict[str, Family] = {
    "independent": Family("Independent pixels", 1, "one distribution per pixel"),
    "autoregressive": Family("Autoregressive models", 2, "NADE, MADE, PixelCNN, WaveNet"),
    "flow": Family("Normalizing flows", 5, "RealNVP, Glow, MAF"),
    "continuous_flow": Family("Continuous-time flows", 7, "flow matching, CNF: an ODE"),
    "vae": Family("Variational autoencoders", 3, "VAE, IWAE: maximize the ELBO"),
    "diffusion": Family("Diffusion models", 6, "DDPM, DDIM: a bound on log p(x)"),
    "markov": Family("Energy-based models", 7, "RBM, EBM: MCMC in training"),
    "gan": Family("Adversarial nets (GANs)", 4, "GAN, DCGAN, cGAN, CycleGAN"),
    "markov_sampler": Family("Markov-chain samplers", 7, "GSN; NCSN: Langevin on a score"),
}

# inner nodes: key -> (title, subtitle, column, children)
_INNER: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "root": ("Generative\nmodels", "", 0, ("explicit", "implicit")),
    "explicit": ("Explicit density", r"$p_\theta(x)$ is defined", 1, ("tractable", "approximate")),
    "implicit": ("Implicit density", "a sampler only", 1, ("direct", "chain_implicit")),
    "tractable": ("Tractable", r"exact $\log p_\theta(x)$", 2, ("independent", "autoregressive", "flow",
                                                                "continuous_flow")),
    "approximate": ("Approximate", "bound or MCMC", 2, ("variational", "chain_explicit")),
    "variational": ("Variational", "lower bound", 3, ("vae", "diffusion")),
    "chain_explicit": ("Markov chain", "MCMC", 3, ("markov",)),
    "direct": ("Direct", "one network pass", 3, ("gan",)),
    "chain_implicit": ("Markov chain", "iterate a chain", 3, ("markov_sampler",)),
}

_BRANCH_COLOUR = {  # leaf colour when nothing is highlighted
    "independent": "#3b6fb6",
    "autoregressive": "#3b6fb6",
    "flow": "#3b6fb6",
    "continuous_flow": "#3b6fb6",
    "vae": "#2a9d8f",
    "diffusion": "#2a9d8f",
    "markov": "#2a9d8f",
    "gan": "#d1495b",
    "markov_sampler": "#d1495b",
}
_STRONG = "#e07a1f"
_MAP_SIZE = (11.65, 6.7)  # inches; model_map's layout is in these units
_GREY_FILL, _GREY_EDGE, _GREY_TEXT = "#f2f2f2", "#b5b5b5", "#8a8a8a"


def _parse_highlight(highlight: str | Iterable[str] | None) -> set[str]:
    if highlight is None:
        return set()
    keys = [highlight] if isinstance(highlight, str) else list(highlight)
    bad = [k for k in keys if k not in FAMILIES]
    if bad or any(not isinstance(k, str) for k in keys):
        raise ValueError(
            f"unknown model family {bad[0] if bad else keys!r} for model_map(highlight=...); "
            f"valid keys: {', '.join(FAMILIES)}"
        )
    return set(keys)


def model_map(highlight: str | Iterable[str] | None = None, ax: Axes | None = None,
              notes: dict[str, str] | None = None) -> Axes:
    """Draw the map of generative model families as a tree.

    Explicit density models split into tractable ones (independent pixels,
    autoregressive models, normalizing flows, continuous-time flows) and
    approximate ones (VAEs and diffusion models through a variational bound,
    energy-based models and Boltzmann machines through Markov chains); implicit
    density models give only a sampler (GANs, Markov chain samplers such as GSNs
    and score networks sampled by Langevin dynamics). Leaves carry the chapter of the book that
    covers them.

    Args:
        highlight: ``None`` (every family coloured by branch) or a key or list
            of keys of :data:`FAMILIES`: ``"independent"``,
            ``"autoregressive"``, ``"flow"``, ``"continuous_flow"``, ``"vae"``,
            ``"diffusion"``, ``"markov"``, ``"gan"``, ``"markov_sampler"``. Highlighted leaves
            and the path to them are drawn in a strong colour, the rest in grey.
        ax: axes to draw on, or ``None`` for a new 11.65 x 6.7 inch figure. The
            drawing uses fixed font sizes, so a given ``ax`` should be about
            that size.
        notes: optional text per family key that replaces the leaf's second
            line (its examples), e.g. what the comparison chapter measured.

    Returns:
        The axes (axis off).

    Raises:
        ValueError: an unknown key in ``highlight``; the message lists the valid keys.
    """
    chosen = _parse_highlight(highlight)
    notes = dict(notes or {})
    unknown = sorted(set(notes) - set(FAMILIES))
    if unknown:
        raise ValueError(f"notes has unknown family keys {unknown}; valid keys: {', '.join(FAMILIES)}")
    if ax is None:
        # a sharper PNG than the notebook default (72 dpi): the map is wide and
        # pages shrink it to the text width
        _, ax = plt.subplots(figsize=_MAP_SIZE, dpi=max(float(plt.rcParams["figure.dpi"]), 110.0))
    ax = _new_axes(ax, _MAP_SIZE)
    layout = _MapLayout(chosen)
    _draw_map_edges(ax, layout)
    _draw_map_inner_nodes(ax, layout)
    _draw_map_leaves(ax, layout, notes)
    width, height = _MAP_SIZE
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


class _MapLayout:
    """Where the map's boxes go (data units ~ inches of the default figure) and which are highlighted."""

    col_x = [0.75, 2.6, 4.575, 6.375]  # centres of inner columns 0..3
    inner_w = [1.4, 1.9, 1.55, 1.55]
    leaf_left, leaf_right = 7.4, 11.6
    leaf_h, inner_h = 0.6, 0.58

    def __init__(self, chosen: set[str]) -> None:
        self.chosen, self.greyed = chosen, bool(chosen)
        gaps = {"vae": 0.22, "gan": 0.22}  # extra space between the three branches
        y, self.pos = _MAP_SIZE[1] - 0.4, {}
        for key in FAMILIES:
            y -= gaps.get(key, 0.0)
            self.pos[key] = y
            y -= 0.68
        for node in ("variational", "chain_explicit", "direct", "chain_implicit", "tractable", "approximate",
                     "explicit", "implicit", "root"):
            self.pos[node] = float(np.mean([self.pos[k] for k in _INNER[node][3]]))
        self.active = {n for n in (*_INNER, *FAMILIES) if set(self.leaves_under(n)) & chosen}

    def leaves_under(self, node: str) -> list[str]:
        if node in FAMILIES:
            return [node]
        return [leaf for child in _INNER[node][3] for leaf in self.leaves_under(child)]

    def right_edge(self, node: str) -> float:
        c = _INNER[node][2]
        return self.col_x[c] + self.inner_w[c] / 2

    def left_edge(self, node: str) -> float:
        if node in FAMILIES:
            return self.leaf_left
        c = _INNER[node][2]
        return self.col_x[c] - self.inner_w[c] / 2


def _draw_map_edges(ax: Axes, layout: _MapLayout) -> None:
    """Parent -> shared trunk -> child, dendrogram style."""
    for node, (_, _, _, kids) in _INNER.items():
        x0 = layout.right_edge(node)
        xm = x0 + min(0.5 * min(layout.left_edge(k) - x0 for k in kids), 0.22)
        for kid in kids:
            on = node in layout.active and kid in layout.active
            colour = _STRONG if on else ("#cccccc" if layout.greyed else "#808080")
            ax.plot([x0, xm, xm, layout.left_edge(kid)], [layout.pos[node], layout.pos[node], layout.pos[kid],
                    layout.pos[kid]], color=colour, lw=2.4 if on else 1.2, solid_capstyle="butt",
                    solid_joinstyle="round", zorder=2 if on else 1)


def _draw_map_inner_nodes(ax: Axes, layout: _MapLayout) -> None:
    for node, (label, sub, col, _) in _INNER.items():
        on, y = node in layout.active, layout.pos[node]
        if layout.greyed:
            face, edge, text = ("#fff3e6", _STRONG, "#222222") if on else (_GREY_FILL, _GREY_EDGE, _GREY_TEXT)
        else:
            face, edge, text = "#f7f7f7", "#555555", "#222222"
        x_centre, w = layout.col_x[col], layout.inner_w[col]
        h = layout.inner_h + (0.26 if "\n" in label else 0.0)
        ax.add_patch(FancyBboxPatch((x_centre - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.0,rounding_size=0.08",
                                    fc=face, ec=edge, lw=1.6 if on and layout.greyed else 1.0, zorder=3))
        if sub:
            ax.text(x_centre, y + 0.1, label, ha="center", va="center", fontsize=10.5,
                    fontweight="bold", color=text, zorder=4)
            ax.text(x_centre, y - 0.14, sub, ha="center", va="center", fontsize=8.5,
                    color=text, style="italic", zorder=4)
        else:
            ax.text(x_centre, y, label, ha="center", va="center", fontsize=11,
                    fontweight="bold", color=text, zorder=4, linespacing=1.15)


def _draw_map_leaves(ax: Axes, layout: _MapLayout, notes: dict[str, str]) -> None:
    left, right = layout.leaf_left, layout.leaf_right
    for key, fam in FAMILIES.items():
        on = key in layout.chosen
        if layout.greyed and not on:
            face, edge, text, badge = _GREY_FILL, _GREY_EDGE, _GREY_TEXT, "#c9c9c9"
        else:
            base = _STRONG if on else _BRANCH_COLOUR[key]
            face, edge, text, badge = _tint(base, 0.86), base, "#1a1a1a", base
        yc = layout.pos[key]
        ax.add_patch(FancyBboxPatch((left, yc - layout.leaf_h / 2), right - left, layout.leaf_h,
                                    boxstyle="round,pad=0.0,rounding_size=0.1", fc=face, ec=edge,
                                    lw=2.2 if on else 1.1, zorder=3))
        ax.text(left + 0.14, yc + 0.12, fam.name, ha="left", va="center", fontsize=11,
                fontweight="bold", color=text, zorder=4)
        ax.text(left + 0.14, yc - 0.15, notes.get(key, fam.examples), ha="left", va="center",
                fontsize=9.5 if key not in notes else 8.5, color=text, zorder=4)
        covered = fam.chapter is not None
        chip = f"ch. {fam.chapter}" if covered else "not covered"
        cw = 0.66 if covered else 0.95
        ax.add_patch(FancyBboxPatch((right - 0.12 - cw, yc - 0.17), cw, 0.34,
                                    boxstyle="round,pad=0.0,rounding_size=0.12",
                                    fc=badge if covered else "white", ec=badge, lw=1.0, zorder=4))
        ax.text(right - 0.12 - cw / 2, yc, chip, ha="center", va="center", fontsize=10 if covered else 8,
                fontweight="bold" if covered else "normal", color="white" if covered else badge, zorder=5)


def _tint(colour: str, amount: float) -> tuple[float, float, float]:
    """Mix ``colour`` with white; ``amount`` 0 keeps it, 1 gives white."""
    r, g, b = matplotlib.colors.to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


# ---------------------------------------------------------------------------
# notebook display helpers shared by every chapter
# ---------------------------------------------------------------------------
def show_source(obj: Callable | type) -> None:
    """Display the source code of a ``dgm`` function or class in a notebook.

    Chapters show the package's code where the text explains it, so the book
    and the package cannot drift apart.
    """
    import inspect

    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Display a small HTML table in a notebook; ``rows`` hold formatted values.

    Every row must have as many entries as ``header``.
    """
    import html as html_module

    from IPython.display import HTML, display

    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} entries but the header has {len(header)}")
    head = "".join(f"<th>{html_module.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    display(HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"))
