"""SegNext's training recipe (README: The training recipe): every
random component of the data pipeline follows its formula over many seeded draws.

Frequencies are checked with a chi-square test (bins with an expected count under 5 pooled with
their neighbours, critical value the 0.999 quantile by Wilson-Hilferty) or a binomial bound of
4 standard deviations; the seeds are fixed, so each test is deterministic.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

import shards
from shards.format import pack_masks
from clickseg.config import AugmentConfig, ClickConfig, Config
from clickseg.data import targets
from clickseg.data.augment import augment, draw_geometry
from clickseg.data.clicks import border_region, correction_click, count_probs, negative_clicks, positive_clicks
from clickseg.data.targets import (MAX_AUGMENT_ATTEMPTS, Scene, Target, choose_target, live_objects,
                                   make_scene, surviving_roots)
from clickseg.regions import padded_distance, uniform_pixels
from clickseg.simulate import prepare_prompts

Z_999 = 3.090232306167813  # standard normal 0.999 quantile


# --------------------------------------------------------------------------- statistics helpers


def chi2_quantile_999(df: int) -> float:
    """0.999 quantile of chi-square with ``df`` degrees of freedom (Wilson-Hilferty)."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + Z_999 * math.sqrt(c)) ** 3


def assert_chi_square(observed, probs) -> None:
    """Observed counts against bin probabilities; adjacent bins pooled until expected >= 5."""
    observed = np.asarray(observed, np.float64)
    probs = np.asarray(probs, np.float64)
    assert observed.shape == probs.shape and abs(probs.sum() - 1.0) < 1e-9
    expected = observed.sum() * probs
    pooled_o, pooled_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            pooled_o.append(acc_o)
            pooled_e.append(acc_e)
            acc_o, acc_e = 0.0, 0.0
    if acc_e > 0 or acc_o > 0:
        assert pooled_e, "too few draws for a chi-square test"
        pooled_o[-1] += acc_o
        pooled_e[-1] += acc_e
    assert len(pooled_e) >= 2, "too few draws for a chi-square test"
    o, e = np.array(pooled_o), np.array(pooled_e)
    stat = float(((o - e) ** 2 / e).sum())
    crit = chi2_quantile_999(len(e) - 1)
    assert stat < crit, f"chi-square {stat:.1f} >= {crit:.1f} (df {len(e) - 1}); observed {o}, expected {e.round(1)}"


def assert_binomial(successes: int, n: int, p: float, sigmas: float = 4.0) -> None:
    sd = math.sqrt(n * p * (1 - p))
    assert abs(successes - n * p) < sigmas * sd, f"{successes}/{n}, expected {n * p:.1f} +- {sigmas * sd:.1f}"


def test_statistics_helpers():
    # Wilson-Hilferty against tabulated chi-square 0.999 quantiles.
    for df, q in ((1, 10.828), (3, 16.266), (10, 29.588), (23, 49.728), (100, 149.449)):
        assert abs(chi2_quantile_999(df) - q) / q < 0.035
    assert_chi_square([100, 100, 100], [1 / 3] * 3)
    with pytest.raises(AssertionError):
        assert_chi_square([150, 100, 50], [1 / 3] * 3)


# --------------------------------------------------------------------------- scenes


def scene_of(masks: list[np.ndarray], kept=None, roots=None, parents=None) -> Scene:
    """A Scene with one object per mask (ids 1..n, overlapping masks in separate layers)."""
    t = masks[0].shape[0]
    layers, placement = pack_masks(masks, t, t)
    parents = parents or [None] * len(masks)
    objects = [shards.Object(i + 1, None, False, parents[i], [], li, v) for i, (li, v) in enumerate(placement)]
    areas = np.array([int(m.sum()) for m in masks], np.int64)
    kept = list(range(len(masks))) if kept is None else kept
    roots = list(kept) if roots is None else roots
    return Scene(np.zeros((3, t, t), np.uint8), layers, objects, areas, kept, roots, (t, t))


def rect(t: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((t, t), bool)
    m[y0:y1, x0:x1] = True
    return m


def target_of(scene: Scene, members: list[int]) -> Target:
    mask = np.zeros(scene.layers.shape[1:], bool)
    for m in members:
        mask |= scene.mask(m)
    return Target(members, mask)


T = 64
SQUARE40 = rect(T, 12, 52, 12, 52)
# Target 20x20 (border radius ceil(0.1 * 20) = 2), another object far from its border ring.
TARGET20 = rect(T, 20, 40, 20, 40)
OTHER = rect(T, 50, 60, 2, 12)


# --------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("sparse", [False, True])
def test_uniform_pixels_uniform_over_region(sparse):
    region = np.zeros((48, 48), bool)
    if sparse:  # a few pixels spread over a large bounding box
        region[2:8, 3:9] = region[40:46, 39:45] = True
        region[20, 5:40:5] = True
    else:
        region[5:30, 10:40] = True
        region[12:20, 20:26] = False  # a hole
    rng = np.random.default_rng(0)
    n = max(10 * int(region.sum()), 8000)
    picked = uniform_pixels(region, n, rng)
    assert picked.shape == (n, 2) and region[picked[:, 0], picked[:, 1]].all()
    counts = np.zeros(region.shape, np.int64)
    np.add.at(counts, (picked[:, 0], picked[:, 1]), 1)
    assert_chi_square(counts[region], np.full(region.sum(), 1.0 / region.sum()))
    assert uniform_pixels(np.zeros((5, 5), bool), 3, rng).shape == (0, 2)


# --------------------------------------------------------------------------- 1. click counts


def test_positive_count_is_one_plus_geometric():
    scene = scene_of([SQUARE40])
    target = target_of(scene, [0])
    cfg = ClickConfig()
    rng = np.random.default_rng(1)
    counts = np.zeros(cfg.max_positive + 1, np.int64)
    for _ in range(6000):
        pos = positive_clicks(scene, target, cfg, rng)
        assert 1 <= len(pos) <= cfg.max_positive
        assert SQUARE40[pos[:, 0], pos[:, 1]].all()
        counts[len(pos)] += 1
    assert counts[0] == 0
    p = 0.8 ** np.arange(24)
    assert_chi_square(counts[1:], p / p.sum())
    assert np.allclose(count_probs(24, 0.8), p / p.sum())


def test_negative_count_is_geometric_from_zero():
    scene = scene_of([TARGET20, OTHER])
    target = target_of(scene, [0])
    cfg = ClickConfig()
    rng = np.random.default_rng(2)
    counts = np.zeros(cfg.max_negative + 1, np.int64)
    for _ in range(6000):
        counts[len(negative_clicks(scene, target, cfg, rng))] += 1
    p = 0.8 ** np.arange(25)
    assert_chi_square(counts, p / p.sum())


# --------------------------------------------------------------------------- 2. positive erosion


def test_positive_click_in_eroded_mask_at_erode_rate():
    scene = scene_of([SQUARE40])
    target = target_of(scene, [0])
    ring = SQUARE40 & ~rect(T, 15, 49, 15, 49)  # 3 erosions of 3x3 leave the inner 34x34
    rng = np.random.default_rng(3)
    n = 6000
    in_ring = 0
    for _ in range(n):
        (y, x), = positive_clicks(scene, target, ClickConfig(), rng, single=True)
        assert SQUARE40[y, x]
        in_ring += int(ring[y, x])
    assert_binomial(in_ring, n, 0.1 * (1 - 34 ** 2 / 40 ** 2))

    always = ClickConfig(positive_erode_prob=1.0)
    for _ in range(1000):
        (y, x), = positive_clicks(scene, target, always, rng, single=True)
        assert SQUARE40[y, x] and not ring[y, x]


# --------------------------------------------------------------------------- 3. negative strategies


def test_negative_strategy_shares():
    scene = scene_of([TARGET20, OTHER])
    target = target_of(scene, [0])
    ring = rect(T, 18, 42, 18, 42) & ~TARGET20
    assert not (ring & OTHER).any()
    outside = T * T - TARGET20.sum()
    r, o = ring.sum(), OTHER.sum()
    probs = [0.5 + 0.1 * r / outside, 0.4 + 0.1 * o / outside, 0.1 * (outside - r - o) / outside]
    rng = np.random.default_rng(4)
    counts = np.zeros(3, np.int64)
    for _ in range(4000):
        neg = negative_clicks(scene, target, ClickConfig(), rng)
        ys, xs = neg[:, 0], neg[:, 1]
        assert not TARGET20[ys, xs].any()
        in_ring, in_other = ring[ys, xs], OTHER[ys, xs]
        counts += [in_ring.sum(), in_other.sum(), (~in_ring & ~in_other).sum()]
    assert_chi_square(counts, probs)


def test_other_strategy_without_other_kept_object_is_all_non_target():
    # The second object was removed (not kept): "other" is then every non-target pixel, not the
    # removed object's pixels (which still are foreground).
    scene = scene_of([TARGET20, OTHER], kept=[0], roots=[0])
    target = target_of(scene, [0])
    assert scene.foreground()[OTHER].all()
    cfg = ClickConfig(negative_border_prob=0.0, negative_other_prob=1.0, negative_bg_prob=0.0)
    rng = np.random.default_rng(5)
    total = in_other = in_top = 0
    for _ in range(3000):
        neg = negative_clicks(scene, target, cfg, rng)
        assert not TARGET20[neg[:, 0], neg[:, 1]].any()
        total += len(neg)
        in_other += int(OTHER[neg[:, 0], neg[:, 1]].sum())
        in_top += int((neg[:, 0] < 10).sum())
    outside = T * T - TARGET20.sum()
    assert total > 8000  # no click dropped: mean count 3.9
    assert_binomial(in_other, total, OTHER.sum() / outside)
    assert_binomial(in_top, total, 10 * T / outside)

    # With a second kept object, "other" is exactly that object.
    scene2 = scene_of([TARGET20, OTHER])
    for _ in range(300):
        neg = negative_clicks(scene2, target_of(scene2, [0]), cfg, rng)
        assert OTHER[neg[:, 0], neg[:, 1]].all()


# --------------------------------------------------------------------------- 4. border ring


def chebyshev_distance(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    gy, gx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.maximum(np.abs(gy[..., None] - ys), np.abs(gx[..., None] - xs))
    return d.min(axis=-1)


def test_border_negatives_within_ceil_radius():
    # An L-shaped target of 529 px: r = ceil(0.1 * 23) = 3 (rounding would give 2).
    target_mask = rect(T, 16, 39, 16, 31) | rect(T, 31, 39, 31, 54)
    assert target_mask.sum() == 529
    r = 3
    dist = chebyshev_distance(target_mask)
    ring = (dist >= 1) & (dist <= r)
    assert np.array_equal(border_region(target_mask, 0.1), ring)
    scene = scene_of([target_mask, OTHER])
    target = target_of(scene, [0])
    cfg = ClickConfig(negative_border_prob=1.0, negative_other_prob=0.0, negative_bg_prob=0.0)
    rng = np.random.default_rng(6)
    hits = np.zeros((T, T), np.int64)
    for _ in range(3000):
        neg = negative_clicks(scene, target, cfg, rng)
        np.add.at(hits, (neg[:, 0], neg[:, 1]), 1)
    d = dist[hits > 0]
    assert d.min() >= 1 and d.max() == r
    assert (hits[dist == r] > 0).sum() > 0.9 * (dist == r).sum()
    assert np.array_equal(hits > 0, ring)  # ~40 clicks a pixel: every ring pixel is hit
    assert_chi_square(hits[ring], np.full(ring.sum(), 1.0 / ring.sum()))


# --------------------------------------------------------------------------- 5. flips and rot90


def dihedral(p: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(q, k) for q in (p, p[:, ::-1]) for k in range(4)]


def test_flip_and_rotate90_orientation_frequencies():
    n_side = 24
    rng = np.random.default_rng(7)
    pattern = rng.integers(1, 250, size=(n_side, n_side)).astype(np.uint8)  # no symmetry
    image = np.repeat(pattern[..., None], 3, axis=2)
    elements = dihedral(pattern)
    assert all(not np.array_equal(a, b) for i, a in enumerate(elements) for b in elements[i + 1:])

    # Expected: flip none 1/2, codes 1 / 0 / -1 a sixth each; then k quarter turns, k = 0 with
    # 1/2 + 1/8, else 1/8 each.
    probs = np.zeros(8)
    for code, pf in ((None, 0.5), (1, 1 / 6), (0, 1 / 6), (-1, 1 / 6)):
        flipped = pattern if code is None else cv2.flip(pattern, code)
        for k, pk in enumerate((0.625, 0.125, 0.125, 0.125)):
            out = np.rot90(flipped, k)
            probs[[np.array_equal(out, e) for e in elements].index(True)] += pf * pk

    cfg = AugmentConfig(scale_min=1.0, scale_max=1.0, shift_rotate_prob=0.0,
                        brightness_contrast_prob=0.0, rgb_shift_prob=0.0)
    counts = np.zeros(8, np.int64)
    for _ in range(2000):
        out_img, out_layers, geo = augment(image, pattern[None], n_side, cfg, rng)
        assert (geo.height, geo.width) == (n_side, n_side)
        found = [np.array_equal(out_layers[0], e) for e in elements]
        assert sum(found) == 1
        i = found.index(True)
        assert all(np.array_equal(plane, elements[i]) for plane in out_img)  # the image too (exact)
        counts[i] += 1
    assert_chi_square(counts, probs)


class ScriptedRng:
    """A generator whose coin flips all fire and whose integer draws are scripted."""

    def __init__(self, integers: list[int]):
        self.queue = list(integers)

    def uniform(self, low, high, size=None):
        return low if size is None else np.full(size, low)

    def random(self):
        return 0.0

    def integers(self, low, high=None, size=None):
        value = self.queue.pop(0)
        assert low <= value < high
        return value


def test_flip_code_then_rotation_counter_clockwise():
    # A non-square source: the quarter turns change the content's shape.
    h, w = 18, 30
    pattern = np.random.default_rng(8).integers(1, 250, size=(h, w)).astype(np.uint8)
    cfg = AugmentConfig(scale_min=1.0, scale_max=1.0, flip_prob=1.0, rotate90_prob=1.0,
                        shift_rotate_prob=0.0, brightness_contrast_prob=0.0, rgb_shift_prob=0.0)
    for code in (-1, 0, 1):
        for k in range(4):
            rng = ScriptedRng([code, k])
            _, layers, geo = augment(np.zeros((h, w, 3), np.uint8), pattern[None], w, cfg, rng)
            want = np.rot90(cv2.flip(pattern, code), k)
            assert (geo.height, geo.width) == want.shape
            assert np.array_equal(layers[0, : want.shape[0], : want.shape[1]], want), (code, k)
            assert not rng.queue


# --------------------------------------------------------------------------- 6. longest side, top left


def test_longest_side_is_input_size_content_top_left():
    rng = np.random.default_rng(9)
    sizes = [(int(a), int(b)) for a, b in rng.integers(16, 400, size=(300, 2))]
    sizes += [(s, s) for s in (16, 17, 64, 99, 333)] + [(20, 60), (60, 20), (400, 133), (133, 400)]
    for size_t in (64, 96, 1024):
        for h, w in sizes:
            geo = draw_geometry(h, w, size_t, AugmentConfig(), rng)
            assert max(geo.height, geo.width) == size_t
            assert geo.matrix.shape == (2, 3)
            # the aspect ratio survives (up to the rounding of the intermediate sizes)
            want = min(h, w) / max(h, w) * size_t
            assert abs(min(geo.height, geo.width) - want) <= 1 + 0.02 * want, (h, w, geo)

    for shift_rotate_prob in (0.75, 0.0):
        cfg = AugmentConfig(shift_rotate_prob=shift_rotate_prob, brightness_contrast_prob=0.0, rgb_shift_prob=0.0)
        for h, w in sizes[:80] + sizes[-9:]:
            if max(h, w) > 3 * min(h, w):
                continue
            image = np.full((h, w, 3), 255, np.uint8)
            layers = np.ones((2, h, w), np.uint8)
            out, out_layers, geo = augment(image, layers, 64, cfg, rng)
            assert out.shape == (3, 64, 64) and out_layers.shape == (2, 64, 64)
            inside = np.zeros((64, 64), bool)
            inside[: geo.height, : geo.width] = True
            assert max(geo.height, geo.width) == 64
            assert not out[:, ~inside].any() and not out_layers[:, ~inside].any()
            assert (out[:, geo.height // 2, geo.width // 2] == 255).all()
            assert (out_layers[:, geo.height // 2, geo.width // 2] == 1).all()
            if shift_rotate_prob == 0.0:  # no border uncovered: the whole rectangle is content
                assert out[:, inside].all() and (out_layers[:, inside] == 1).all()
            else:
                assert (out[:, inside] > 0).mean() > 0.75

    # With the colour steps too, the padding on the right and bottom stays 0.
    for h, w in sizes[:100]:
        image = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
        out, out_layers, geo = augment(image, np.ones((1, h, w), np.uint8), 64, AugmentConfig(), rng)
        assert max(geo.height, geo.width) == 64
        assert not out[:, geo.height:].any() and not out[:, :, geo.width:].any()
        assert not out_layers[:, geo.height:].any() and not out_layers[:, :, geo.width:].any()
        assert out_layers[0, geo.height // 2, geo.width // 2] == 1

    # A black source: the colour steps act after the geometry in SegNext, so the corners that the
    # rotation uncovers get the same colour as the content (the table's value for 0); the padding stays 0.
    rotated = 0
    for h, w in sizes[:100]:
        out, _, geo = augment(np.zeros((h, w, 3), np.uint8), np.zeros((0, h, w), np.uint8), 64, AugmentConfig(), rng)
        content = out[:, : geo.height, : geo.width].reshape(3, -1)
        assert (content == content[:, :1]).all()
        assert not out[:, geo.height:].any() and not out[:, :, geo.width:].any()
        rotated += int(content.any())
    assert rotated > 30  # the colour steps changed 0 in most draws


# --------------------------------------------------------------------------- 7. keep background, merge


def test_keep_background_rate(monkeypatch):
    calls = []

    def counting_augment(*args, **kwargs):
        calls.append(1)
        return augment(*args, **kwargs)

    monkeypatch.setattr(targets, "augment", counting_augment)
    cfg = Config()
    cfg.model.input_size = 16
    image = np.full((20, 12, 3), 90, np.uint8)
    # An object that no draw keeps (it has no pixel): each draw is kept as background with
    # p = 0.05, else the image is augmented again.
    lost = shards.Sample("0", "x", image, [shards.Object(1, None, False, None, [], 0, 1)], [],
                         np.zeros((1, 20, 12), np.uint8))
    rng = np.random.default_rng(10)
    draws, nones = [], 0
    for _ in range(700):
        before = len(calls)
        scene = make_scene(lost, cfg, rng)
        draws.append(len(calls) - before)
        if scene is None:
            nones += 1
            assert draws[-1] == MAX_AUGMENT_ATTEMPTS
        else:
            assert scene.kept == [] and scene.roots == [] and list(scene.areas) == [0]
            assert scene.image.shape == (3, 16, 16)
            t = choose_target(scene, cfg, rng)
            assert t.members == [] and not t.mask.any()
    # Draws per call: geometric with p = 0.05, cut at MAX_AUGMENT_ATTEMPTS.
    p, cap = cfg.data.keep_background_prob, MAX_AUGMENT_ATTEMPTS
    k = np.arange(1, cap + 1)
    pmf = (1 - p) ** (k - 1) * p
    pmf[-1] = (1 - p) ** (cap - 1)
    mean, var = (k * pmf).sum(), ((k - (k * pmf).sum()) ** 2 * pmf).sum()
    assert abs(mean - 1 / p) < 0.2
    assert abs(np.mean(draws) - mean) < 4 * math.sqrt(var / len(draws)), np.mean(draws)
    assert nones <= 16  # expected 700 * 0.95**100 = 4.1

    # Without any object every draw would be kept or redrawn alike: one draw is the kept one.
    empty = shards.Sample("1", "x", image, [], [], np.zeros((1, 20, 12), np.uint8))
    for _ in range(50):
        before = len(calls)
        scene = make_scene(empty, cfg, rng)
        assert len(calls) - before == 1
        assert scene.kept == [] and scene.roots == [] and scene.objects == []


def test_merge_rate_and_sizes():
    masks = [rect(32, 0, 8, 0, 8), rect(32, 10, 20, 10, 20), rect(32, 22, 30, 0, 30)]
    scene = scene_of(masks)
    cfg = Config()
    rng = np.random.default_rng(11)
    n, merged, singles = 5000, 0, np.zeros(3, np.int64)
    for _ in range(n):
        t = choose_target(scene, cfg, rng)
        assert len(set(t.members)) == len(t.members) and set(t.members) <= {0, 1, 2}
        assert np.array_equal(t.mask, np.any([masks[m] for m in t.members], axis=0))
        assert len(t.members) in (1, 2)
        merged += len(t.members) == 2
        if len(t.members) == 1:
            singles[t.members[0]] += 1
    assert_binomial(merged, n, 0.15)
    assert_chi_square(singles, [1 / 3] * 3)

    one = scene_of(masks, kept=[0, 1, 2], roots=[1])  # 0 and 2 kept but not roots
    for _ in range(500):
        assert choose_target(one, cfg, rng).members == [1]

    cfg.data.max_merged_objects = 3
    sizes = np.zeros(4, np.int64)
    for _ in range(n):
        sizes[len(choose_target(scene, cfg, rng).members)] += 1
    assert_binomial(sizes[2] + sizes[3], n, 0.15)
    assert_binomial(sizes[3], sizes[2] + sizes[3], 0.5)


# --------------------------------------------------------------------------- 8. roots, removal, stuff


def tree(kept_flags) -> list[int]:
    objects = [shards.Object(1, None, False, None, [2], 0, 1), shards.Object(2, None, False, 1, [3], 1, 1),
               shards.Object(3, None, False, 2, [], 2, 1), shards.Object(4, None, False, None, [], 0, 2)]
    return surviving_roots(objects, np.array(kept_flags))


def test_surviving_roots_promote_children():
    # A (id 1) parent of B parent of C; D a separate root.
    assert tree([1, 1, 1, 1]) == [0, 3]
    assert tree([0, 1, 1, 1]) == [1, 3]
    assert tree([0, 0, 1, 1]) == [2, 3]
    assert tree([1, 0, 1, 1]) == [0, 3]  # C's nearest kept ancestor is A
    assert tree([1, 1, 0, 0]) == [0]
    assert tree([0, 0, 0, 0]) == []


def identity_config(t: int) -> Config:
    cfg = Config()
    cfg.model.input_size = t
    cfg.augment = AugmentConfig(scale_min=1.0, scale_max=1.0, flip_prob=0.0, rotate90_prob=0.0,
                                shift_rotate_prob=0.0, brightness_contrast_prob=0.0, rgb_shift_prob=0.0)
    return cfg


def test_small_parent_removed_child_becomes_target():
    t = 64
    layers = np.zeros((2, t, t), np.uint8)
    layers[0, 2:22, 2:22] = 1  # parent: 400 px < 1000
    layers[1, 10:50, 10:50] = 1  # child: 1600 px
    layers[0, 55:60, 55:60] = 2  # a small unrelated object
    objects = [shards.Object(1, None, False, None, [2], 0, 1), shards.Object(2, None, False, 1, [], 1, 1),
               shards.Object(3, None, False, None, [], 0, 2)]
    sample = shards.Sample("0", "x", np.full((t, t, 3), 7, np.uint8), objects, [], layers)
    cfg = identity_config(t)
    rng = np.random.default_rng(12)
    scene = make_scene(sample, cfg, rng)
    assert np.array_equal(scene.layers, layers)
    assert list(scene.areas) == [400, 1600, 25]
    assert scene.kept == [1] and scene.roots == [1]
    target = choose_target(scene, cfg, rng)
    assert target.members == [1] and np.array_equal(target.mask, layers[1] == 1)
    assert np.array_equal(scene.foreground(), (layers[0] > 0) | (layers[1] > 0))
    # With every object removed the target is empty and every negative strategy draws from the
    # background: never on a removed object's pixels.
    cfg.data.min_object_area = 5000
    scene = make_scene(sample, cfg, rng)
    assert scene.kept == [] and scene.roots == [] and list(scene.areas) == [400, 1600, 25]
    empty = choose_target(scene, cfg, rng)
    assert empty.members == [] and not empty.mask.any()
    background = (layers == 0).all(axis=0)
    total = 0
    for _ in range(300):
        neg = negative_clicks(scene, empty, ClickConfig(), rng)
        assert background[neg[:, 0], neg[:, 1]].all()
        total += len(neg)
    assert total > 800


def test_stuff_kept_as_roots_with_stuff_prob():
    objects = [shards.Object(1, None, False, None, [], 0, 1), shards.Object(2, None, True, None, [], 0, 2),
               shards.Object(3, None, True, 1, [4], 1, 1)]
    sample = shards.Sample("0", "x", np.zeros((8, 8, 3), np.uint8), objects, [], np.zeros((2, 8, 8), np.uint8))
    rng = np.random.default_rng(13)
    n, with_stuff = 4000, 0
    for _ in range(n):
        live = live_objects(sample, 0.3, rng)
        assert live[0] is objects[0]
        if len(live) == 3:
            with_stuff += 1
            for o, src in zip(live[1:], objects[1:]):
                assert (o.id, o.is_stuff, o.layer, o.value) == (src.id, True, src.layer, src.value)
                assert o.parent is None and o.children == []
        else:
            assert len(live) == 1
    assert_binomial(with_stuff, n, 0.3)
    assert all(len(live_objects(sample, 0.0, rng)) == 1 for _ in range(100))
    assert all(len(live_objects(sample, 1.0, rng)) == 3 for _ in range(100))


def test_erased_stuff_is_background():
    t = 64
    layers = np.zeros((1, t, t), np.uint8)
    layers[0, 10:45, 10:50] = 1  # thing
    layers[0, 48:, :] = 2  # stuff: 1024 px
    objects = [shards.Object(1, None, False, None, [], 0, 1), shards.Object(2, None, True, None, [], 0, 2)]
    sample = shards.Sample("0", "x", np.zeros((t, t, 3), np.uint8), objects, [], layers)
    cfg = identity_config(t)
    cfg.data.stuff_prob = 0.0
    scene = make_scene(sample, cfg, np.random.default_rng(14))
    assert [o.id for o in scene.objects] == [1]
    assert np.array_equal(scene.foreground(), layers[0] == 1)
    cfg.data.stuff_prob = 1.0
    scene = make_scene(sample, cfg, np.random.default_rng(14))
    assert scene.roots == [0, 1] and np.array_equal(scene.foreground(), layers[0] > 0)


# --------------------------------------------------------------------------- 9. correction clicks


def test_correction_click_uniform_over_inner_half():
    t = 48
    gt = rect(t, 8, 28, 8, 38)
    fp = rect(t, 36, 40, 36, 40)
    prob = fp.astype(np.float32)  # 0 on the object (all false negative), 1 on a small FP square
    dt = padded_distance(gt, 5)
    inner = dt > dt.max() / 2
    assert padded_distance(fp, 5).max() < dt.max()
    index = -np.ones((t, t), np.int64)
    index[inner] = np.arange(inner.sum())
    n = 8 * int(inner.sum())
    rng = np.random.default_rng(15)
    counts = np.zeros(inner.sum(), np.int64)
    for _ in range(n):
        y, x, label = correction_click(gt, prob, 0.49, rng)
        assert label == 1 and inner[y, x]
        counts[index[y, x]] += 1
    assert_chi_square(counts, np.full(len(counts), 1.0 / len(counts)))

    # Mirrored: a large false positive, a small false negative -> negative clicks in the FP's inner half.
    gt2 = fp.copy()
    prob2 = gt.astype(np.float32)
    inner2 = padded_distance(gt, 5) > padded_distance(gt, 5).max() / 2
    for _ in range(300):
        y, x, label = correction_click(gt2, prob2, 0.49, rng)
        assert label == 0 and inner2[y, x]

    # Equal depths: a negative click.
    gt3 = rect(t, 2, 8, 2, 8)
    prob3 = rect(t, 20, 26, 20, 26).astype(np.float32)
    for _ in range(100):
        y, x, label = correction_click(gt3, prob3, 0.49, rng)
        assert label == 0 and prob3[y, x] == 1


def test_correction_click_none_without_error():
    t = 32
    rng = np.random.default_rng(16)
    gt = rect(t, 5, 20, 3, 25)
    empty = np.zeros((t, t), bool)
    assert correction_click(gt, gt.astype(np.float32), 0.49, rng) is None  # perfect
    assert correction_click(gt, np.where(gt, 0.5, 0.3), 0.49, rng) is None  # right side of 0.49
    assert correction_click(empty, np.zeros((t, t)), 0.49, rng) is None
    for dtype in (np.float32, np.float64):
        at = np.full((t, t), 0.49, dtype)  # neither < 0.49 nor > 0.49
        assert correction_click(empty, at, 0.49, rng) is None
        assert correction_click(gt, at, 0.49, rng) is None
    # one wrong pixel is an error: a click there, never at (0, 0)
    prob = gt.astype(np.float32)
    prob[30, 30] = 0.9
    assert correction_click(gt, prob, 0.49, rng) == (30, 30, 0)


class FakeModel:
    """Stands in for SegNext: fixed logits; records the calls."""

    def __init__(self, logits: torch.Tensor):
        self.logits, self.training = logits, True
        self.decodes = self.encodes = 0
        self.prevs, self.modes = [], []

    def eval(self):
        self.training = False
        return self

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def encode_image(self, images):
        self.encodes += 1
        return ("features", images.shape)

    def decode(self, features, clicks, prev):
        assert features[0] == "features"
        self.decodes += 1
        self.modes.append(self.training)
        self.prevs.append(prev.clone())
        return self.logits.clone()


def test_prepare_prompts_correction_passes():
    b, t = 3, 16
    gt = torch.zeros(b, 1, t, t)
    gt[0, 0, 4:12, 4:12] = 1  # predicted empty: false negatives -> positive clicks
    fp_region = torch.zeros(t, t, dtype=torch.bool)
    fp_region[2:10, 6:14] = True  # sample 1 has no object: false positives -> negative clicks
    gt[2, 0, 3:9, 5:13] = 1  # predicted perfectly: no click
    logits = torch.full((b, 1, t, t), -10.0)
    logits[1, 0][fp_region] = 10.0
    logits[2, 0][gt[2, 0] > 0] = 10.0
    probs = torch.sigmoid(logits)
    images = torch.rand(b, 3, t, t, generator=torch.Generator().manual_seed(0))
    cfg = ClickConfig(max_positive=4, max_negative=4, max_correction_clicks=3)
    initial = torch.full((b, 8, 3), -1.0)
    initial[:, 0] = torch.tensor([5.0, 5.0, 1.0])
    initial[:, 4] = torch.tensor([0.0, 15.0, 0.0])
    initial[1, 5] = torch.tensor([1.0, 1.0, 0.0])
    keep = initial.clone()
    fn_inner = padded_distance(gt[0, 0].numpy() > 0, 5)
    fn_inner = fn_inner > fn_inner.max() / 2
    fp_inner = padded_distance(fp_region.numpy(), 5)
    fp_inner = fp_inner > fp_inner.max() / 2

    rng = np.random.default_rng(17)
    passes = np.zeros(4, np.int64)
    for call in range(800):
        model = FakeModel(logits)
        model.training = call % 2 == 0  # the mode is restored, whichever it was
        clicks, prev = prepare_prompts(model, images, gt, initial, cfg, rng)
        assert model.training == (call % 2 == 0)
        assert torch.equal(initial, keep)  # the input is not modified
        n = model.decodes
        passes[n] += 1
        assert model.encodes == (1 if n else 0)
        assert model.modes == [False] * n
        if n:
            assert not model.prevs[0].any()  # zeros before the first pass
            assert all(torch.equal(p, probs) for p in model.prevs[1:])  # probabilities fed back
            assert torch.equal(prev, probs)
        else:
            assert not prev.any()
        assert clicks.shape == initial.shape
        want0 = {4 - i for i in range(1, n + 1)}  # rows max_positive - i
        want1 = {8 - i for i in range(1, n + 1)}  # rows - i
        for row in range(8):
            if row in want0:
                y, x, label = clicks[0, row].tolist()
                assert label == 1 and fn_inner[int(y), int(x)]
            else:
                assert torch.equal(clicks[0, row], initial[0, row])
            if row in want1:
                y, x, label = clicks[1, row].tolist()
                assert label == 0 and fp_inner[int(y), int(x)]
            else:
                assert torch.equal(clicks[1, row], initial[1, row])
        assert torch.equal(clicks[2], initial[2])
    assert_chi_square(passes, [0.25] * 4)
