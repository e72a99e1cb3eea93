"""Assignment 2: its plausible mistakes and its own checks; the tests every assignment shares
(solutions accepted, mistakes rejected, strict mode, the notebooks) run from ``SPEC`` in test_assignments.py."""


import pytest
import torch
from torch import nn
from torch.nn import functional as F

from assignment_support import Assignment, CHAPTERS, load_solutions
from dgm.autoregressive import MaskedConv2d as PackageMaskedConv2d
from dgm.checks import a02

SOURCE = CHAPTERS / "02_assignment.ipynb"


@pytest.fixture(scope="module")
def solutions():
    """The solution functions, taken from the source notebook's code cells."""
    return load_solutions(SOURCE)


CHECKERS = {
    "made_masks": a02.check_made_masks,
    "conv_mask": a02.check_conv_mask,
    "MaskedConv2d": a02.check_masked_conv2d,
    "pixelcnn": a02.check_pixelcnn,
    "autoregressive_nll": a02.check_autoregressive_nll,
    "sample_autoregressive": a02.check_sample_autoregressive,
}


def test_checkers_leave_the_global_random_state_alone(solutions):
    before = torch.get_rng_state()
    a02.check_masked_conv2d(solutions["MaskedConv2d"], strict=False)
    a02.check_pixelcnn(solutions["pixelcnn"], strict=False)
    assert torch.equal(before, torch.get_rng_state())


# ---------------------------------------------------------------------------
# the connectivity helpers
# ---------------------------------------------------------------------------
def test_pixel_dependencies_of_one_type_a_layer():
    height, width = 4, 5
    dep = a02.pixel_dependencies(PackageMaskedConv2d(1, 2, 3, "A"), 1, height, width)
    for p in range(height * width):
        r, c = divmod(p, width)
        want = {(r - 1, c - 1), (r - 1, c), (r - 1, c + 1), (r, c - 1)}
        got = {divmod(q, width) for q in torch.nonzero(dep[p]).flatten().tolist()}
        assert got == {(i, j) for i, j in want if 0 <= i < height and 0 <= j < width}, (r, c)


def test_reference_pixelcnn_is_autoregressive_with_a_blind_spot():
    height, width = a02.IMAGE_SIZE
    for layers in (1, 2, 4):
        dep = a02.pixel_dependencies(a02.reference_pixelcnn(3, layers, 3), 1, height, width)
        assert not (dep & ~torch.ones_like(dep).tril(-1)).any(), "sees the present or the future"
        r, c = 4, 4
        field = dep[r * width + c].view(height, width)
        assert field[r, c - 1] and field[r - 1, c + 1]
        assert not field[r - 1, c + 2], "the blind spot: (r-1, c+2) comes earlier but is never seen"


def test_pixel_dependencies_agree_with_the_package_receptive_field():
    """The package measures with the weights as they are, where a dead ReLU can hide a path;
    every pixel it finds must be one that the structural measurement finds too."""
    from dgm.autoregressive import PixelCNN, receptive_field

    torch.manual_seed(0)
    model = PixelCNN((1, 7, 9), 2, channels=16, num_layers=3, kernel_size=3, gated=False)
    ours = a02.pixel_dependencies(a02.reference_pixelcnn(4, 3, 3), 1, 7, 9)
    for pixel in [(3, 4)]:  # one pixel: each call measures the whole matrix
        theirs = receptive_field(model, pixel)
        mine = ours[pixel[0] * 9 + pixel[1]].view(7, 9)
        assert not (theirs & ~mine).any(), pixel
        assert theirs.sum() >= 0.8 * mine.sum(), pixel


def test_pixel_dependencies_as_initialised_sees_masking_done_once():
    layer = PackageMaskedConv2d(1, 2, 3, "A")
    leaky = nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        leaky.weight.mul_(layer.mask)  # masked once: fine now, not after training
    assert torch.equal(a02.pixel_dependencies(leaky, 1, 4, 5, positive=False),
                       a02.pixel_dependencies(layer, 1, 4, 5))
    assert a02.pixel_dependencies(leaky, 1, 4, 5).diagonal().all()


# ---------------------------------------------------------------------------
# plausible wrong implementations
# ---------------------------------------------------------------------------
def _masks(in_degrees, hidden_degrees, hidden_rule, output_rule):
    masks, below = [], in_degrees
    for degrees in hidden_degrees:
        masks.append(hidden_rule(degrees[:, None], below[None, :]).float())
        below = degrees
    masks.append(output_rule(in_degrees[:, None], below[None, :]).float())
    return masks


def made_output_ge(in_degrees, hidden_degrees):
    return _masks(in_degrees, hidden_degrees, torch.ge, torch.ge)


def made_hidden_gt(in_degrees, hidden_degrees):
    return _masks(in_degrees, hidden_degrees, torch.gt, torch.gt)


def made_rules_swapped(in_degrees, hidden_degrees):
    return _masks(in_degrees, hidden_degrees, torch.gt, torch.ge)


def made_transposed(in_degrees, hidden_degrees):
    return [m.T for m in _masks(in_degrees, hidden_degrees, torch.ge, torch.gt)]


def made_inverse_permutation(in_degrees, hidden_degrees):
    visit = in_degrees.argsort() + 1  # which input comes first, second, ... read as degrees
    return _masks(visit, hidden_degrees, torch.ge, torch.gt)


def made_natural_order(in_degrees, hidden_degrees):
    return _masks(torch.arange(1, len(in_degrees) + 1), hidden_degrees, torch.ge, torch.gt)


def made_needs_a_hidden_layer(in_degrees, hidden_degrees):
    masks = [(h[:, None] >= b[None, :]).float() for b, h in zip([in_degrees, *hidden_degrees], hidden_degrees)]
    return masks + [(in_degrees[:, None] > hidden_degrees[-1][None, :]).float()]


def made_bool_masks(in_degrees, hidden_degrees):
    return [m.bool() for m in _masks(in_degrees, hidden_degrees, torch.ge, torch.gt)]


def made_no_output_mask(in_degrees, hidden_degrees):
    return _masks(in_degrees, hidden_degrees, torch.ge, torch.gt)[:-1]


def _spatial(k, mask_type):
    m = torch.zeros(k, k)
    m[: k // 2] = 1
    m[k // 2, : k // 2 + (mask_type == "B")] = 1
    return m


def _expand(m, in_channels, out_channels):
    return m.expand(out_channels, in_channels, *m.shape).clone()


def conv_whole_centre_row(k, mask_type, in_channels=1, out_channels=1):
    m = torch.zeros(k, k)
    m[: k // 2 + 1] = 1
    if mask_type == "A":
        m[k // 2, k // 2] = 0
    return _expand(m, in_channels, out_channels)


def conv_types_swapped(k, mask_type, in_channels=1, out_channels=1):
    return _expand(_spatial(k, "B" if mask_type == "A" else "A"), in_channels, out_channels)


def conv_transposed(k, mask_type, in_channels=1, out_channels=1):
    return _expand(_spatial(k, mask_type).T, in_channels, out_channels)


def conv_rows_below_kept(k, mask_type, in_channels=1, out_channels=1):
    m = torch.ones(k, k)
    m[k // 2, k // 2 + (mask_type == "B"):] = 0
    return _expand(m, in_channels, out_channels)


def conv_not_expanded(k, mask_type, in_channels=1, out_channels=1):
    return _spatial(k, mask_type)


def conv_channels_swapped(k, mask_type, in_channels=1, out_channels=1):
    return _spatial(k, mask_type).expand(in_channels, out_channels, k, k).clone()


def conv_flipped(k, mask_type, in_channels=1, out_channels=1):
    return _expand(_spatial(k, mask_type).flip(0, 1), in_channels, out_channels)


class LayerMaskedOnce(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.weight.mul_(_spatial(kernel_size, mask_type))


class LayerNoPadding(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        super().__init__(in_channels, out_channels, kernel_size)
        self.register_buffer("mask", _expand(_spatial(kernel_size, mask_type), in_channels, out_channels))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias)


class LayerMaskIsAParameter(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask = nn.Parameter(_expand(_spatial(kernel_size, mask_type), in_channels, out_channels))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class LayerAlwaysTypeA(LayerNoPadding):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", _expand(_spatial(kernel_size, "A"), in_channels, out_channels))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class LayerTransposedMask(LayerAlwaysTypeA):
    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A"):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", _expand(_spatial(kernel_size, mask_type).T, in_channels, out_channels))


def _stack(types, hidden_channels, kernel_size, head=None):
    layers, c_in = [], 1
    for t in types:
        layers += [PackageMaskedConv2d(c_in, hidden_channels, kernel_size, t), nn.ReLU()]
        c_in = hidden_channels
    layers.append(head if head is not None else PackageMaskedConv2d(hidden_channels, 1, 1, "B"))
    return nn.Sequential(*layers)


def stack_type_b_first(h, n, k):
    return _stack(["B"] * n, h, k)


def stack_type_a_everywhere(h, n, k):
    return _stack(["A"] * n, h, k)


def stack_unmasked_later_layers(h, n, k):
    layers = [PackageMaskedConv2d(1, h, k, "A"), nn.ReLU()]
    for _ in range(n - 1):
        layers += [nn.Conv2d(h, h, k, padding=k // 2), nn.ReLU()]
    return nn.Sequential(*layers, PackageMaskedConv2d(h, 1, 1, "B"))


def stack_without_head(h, n, k):
    return nn.Sequential(*list(_stack(["A"] + ["B"] * (n - 1), h, k))[:-1])


def stack_kxk_head(h, n, k):
    return _stack(["A"] + ["B"] * (n - 1), h, k, head=PackageMaskedConv2d(h, 1, k, "B"))


def stack_one_layer_short(h, n, k):
    return _stack(["A"] + ["B"] * (n - 2), h, k)


MADE_1 = "D=3 in natural order, one hidden layer of 4 units"
MADE_2 = "D=4, in_degrees=[3, 1, 4, 2], two hidden layers"
CONV_1 = "3x3 type A, 1 in / 1 out channels: [[1, 1, 1], [1, 0, 0], [0, 0, 0]]"
LAYER_1 = "MaskedConv2d(1, 4, 3, 'A') on a 7x9 image"
LAYER_2 = "MaskedConv2d(4, 4, 3, 'B') on a 7x9 image"
STACK_1 = "pixelcnn(8, 2, 3) on a 7x9 image"

WRONG = [
    # (checker, wrong implementation, the first case that must fail, text the report must contain)
    ("made_masks", made_output_ge, MADE_1, "`>=` in the output mask"),
    ("made_masks", made_output_ge, MADE_1, "not autoregressive: output 0 (degree 1) depends on input 0, its own variable"),
    ("made_masks", made_hidden_gt, MADE_1, "`>` in the hidden masks"),
    ("made_masks", made_hidden_gt, MADE_1, "connections missing"),
    ("made_masks", made_rules_swapped, MADE_1, "`>` in the hidden masks and `>=` in the output mask"),
    ("made_masks", made_transposed, MADE_1, "transposed: nn.Linear's weight is (out_features, in_features)"),
    ("made_masks", made_inverse_permutation, MADE_2, "the inverse permutation"),
    ("made_masks", made_natural_order, MADE_2, "the natural order 1..D instead of in_degrees"),
    ("made_masks", made_needs_a_hidden_layer, "D=5, no hidden layer (hidden_degrees = [])", "IndexError"),
    ("made_masks", made_bool_masks, MADE_1, "floating-point tensor of 0.0 and 1.0"),
    ("made_masks", made_no_output_mask, MADE_1, "the output mask, from the last hidden layer to the outputs, is missing"),
    ("conv_mask", conv_whole_centre_row, CONV_1, "the whole centre row kept"),
    ("conv_mask", conv_types_swapped, CONV_1, "type A keeps the centre pixel"),
    ("conv_mask", conv_types_swapped, CONV_1, "the centre pixel of the other mask type"),
    ("conv_mask", conv_transposed, CONV_1, "the mask transposed"),
    ("conv_mask", conv_rows_below_kept, CONV_1, "the rows below the centre kept"),
    ("conv_mask", conv_not_expanded, CONV_1, "expand it over the channels"),
    ("conv_mask", conv_channels_swapped, "5x5 type A, 2 in / 3 out channels", "in and out channels are swapped"),
    ("conv_mask", conv_flipped, CONV_1, "the mask flipped"),
    ("MaskedConv2d", LayerMaskedOnce, LAYER_1, "the mask is applied only once"),
    ("MaskedConv2d", LayerNoPadding, LAYER_1, "padding = kernel_size // 2"),
    ("MaskedConv2d", LayerMaskIsAParameter, LAYER_1, "register_buffer"),
    ("MaskedConv2d", LayerAlwaysTypeA, LAYER_2, "does not see the input pixel itself"),
    ("MaskedConv2d", LayerTransposedMask, LAYER_1, "which comes later in raster order"),
    ("pixelcnn", stack_type_b_first, STACK_1, "the FIRST layer must be type A"),
    ("pixelcnn", stack_type_a_everywhere, STACK_1, "after the first layer use type B"),
    ("pixelcnn", stack_unmasked_later_layers, STACK_1, "which comes later in raster order"),
    ("pixelcnn", stack_without_head, STACK_1, "1 output channel expected"),
    ("pixelcnn", stack_kxk_head, STACK_1, "is the last layer a 1x1 convolution"),
    ("pixelcnn", stack_one_layer_short, STACK_1, "too few layers"),
]


def _check_source_output(text):
    assert "your NLL of the trained MADE" in text
    assert "MADE, your masks:" in text and "leaky MADE" in text
    nll = {line.split(":")[0].strip(): float(line.split("test NLL")[1].split()[0])
           for line in text.splitlines() if "test NLL" in line}
    assert nll["MADE, your masks"] < nll["independent pixels"] - 2, nll
    assert "MADE: p(x_i=0 | .) + p(x_i=1 | .) at pixel (3, 3), mean over test images = 1.000" in text


SPEC = Assignment(
    number="02", checkers=CHECKERS, wrong=WRONG, stubs=7,
    strict_example=("made_masks", made_output_ge, "`>=` in the output mask"),
    leaks=(">= below", "self.weight * self.mask", "register_buffer"),
    source_check=_check_source_output,
    student_expect=("Finish exercise 1 first", "Finish exercises 1, 5 and 6 first"),
)
