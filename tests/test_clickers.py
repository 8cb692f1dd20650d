"""The center clicker against an independent brute-force reference (exact EDT over small masks)."""
import numpy as np
import pytest

from clickseg.eval.clickers import CenterClicker, Click, center_click


def brute_sq_dist(region: np.ndarray) -> np.ndarray:
    """Squared distance (exact integers) of each region pixel to the nearest pixel outside it,
    where everything beyond the image border is outside; 0 off the region."""
    h, w = region.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = region
    oy, ox = np.nonzero(~padded)  # never empty: the padding ring is outside
    out = np.zeros((h, w), dtype=np.int64)
    for y, x in zip(*np.nonzero(region)):
        out[y, x] = ((oy - (y + 1)) ** 2 + (ox - (x + 1)) ** 2).min()
    return out


def brute_click(gt: np.ndarray, pred: np.ndarray, used: set) -> Click:
    """SegNext's center click (isegm/inference/clicker.py), written with loops and integer squared distances."""
    valid, obj = gt != -1, gt == 1
    fn = brute_sq_dist(obj & ~pred & valid)
    fp = brute_sq_dist(~obj & pred & valid)
    for y, x in used:
        fn[y, x] = fp[y, x] = 0
    positive = fn.max() > fp.max()
    dist = fn if positive else fp
    best = dist.max()
    for y in range(gt.shape[0]):  # first maximum in row-major order
        for x in range(gt.shape[1]):
            if dist[y, x] == best:
                return Click(y, x, bool(positive))
    raise AssertionError("unreachable")


def random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Either noise or blobs (rectangles, often touching the border, with equal-distance ties)."""
    if rng.random() < 0.3:
        return rng.random(shape) < rng.uniform(0.1, 0.9)
    m = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        y0, x0 = rng.integers(-2, shape[0]), rng.integers(-2, shape[1])
        h, w = rng.integers(1, 9, size=2)
        m[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = rng.random() < 0.8
    return m


def test_matches_brute_force_over_random_sequences():
    rng = np.random.default_rng(1234)
    n_pos = n_neg = 0
    for case in range(200):
        shape = (12, 15)
        gt = random_mask(rng, shape).astype(np.int64)
        gt[rng.random(shape) < rng.choice([0.0, 0.05, 0.3])] = -1
        clicker = CenterClicker(gt)
        used: set = set()
        pred = np.zeros(shape, dtype=bool)
        for step in range(5):
            expected = brute_click(gt, pred, used)
            got = clicker.next_click(pred)
            assert got == expected, (case, step)
            assert isinstance(got.y, int) and isinstance(got.x, int) and isinstance(got.is_positive, bool)
            used.add((got.y, got.x))
            n_pos += got.is_positive
            n_neg += not got.is_positive
            pred = random_mask(rng, shape) if rng.random() < 0.7 else gt == 1  # sometimes perfect
        assert len(clicker.clicks) == 5
    assert n_pos > 100 and n_neg > 100


def test_opencv_distance_is_exact():
    """DIST_L2 with mask size 0 must be the exact EDT (a 3x3/5x5 chamfer mask would not be)."""
    from clickseg.regions import padded_distance

    rng = np.random.default_rng(7)
    for _ in range(50):
        region = random_mask(rng, (20, 23))
        np.testing.assert_allclose(padded_distance(region), np.sqrt(brute_sq_dist(region)), rtol=1e-6)


def test_perfect_prediction_gives_negative_click_at_origin():
    gt = np.zeros((6, 7), dtype=np.int64)
    gt[2:5, 2:5] = 1
    gt[0, 0] = -1  # "whatever that pixel is"
    clicker = CenterClicker(gt)
    assert clicker.next_click(gt == 1) == Click(0, 0, False)
    assert clicker.next_click(gt == 1) == Click(0, 0, False)  # all-zero maps: argmax stays at (0, 0)


def test_first_click_is_object_center_and_never_repeated():
    gt = np.zeros((9, 9), dtype=np.int64)
    gt[2:7, 1:6] = 1  # 5x5 square, center (4, 3) at distance 3
    clicker = CenterClicker(gt)
    empty = np.zeros_like(gt, dtype=bool)
    assert clicker.next_click(empty) == Click(4, 3, True)
    # same prediction again: the center is excluded; the 3 x 3 ring around it is at distance 2
    # (e.g. (3, 2): 2 to row 1 and to column 0), and its first pixel in row-major order is (3, 2)
    assert clicker.next_click(empty) == Click(3, 2, True)
    assert clicker.clicks == [Click(4, 3, True), Click(3, 2, True)]


def test_strict_greater_equal_maxima_give_negative_click():
    gt = np.zeros((5, 11), dtype=np.int64)
    gt[1:4, 1:4] = 1  # FN square, max distance 2 at (2, 2)
    pred = np.zeros_like(gt, dtype=bool)
    pred[1:4, 6:9] = True  # FP square of the same size, max distance 2 at (2, 7)
    assert center_click(gt, pred, np.ones(gt.shape)) == Click(2, 7, False)
    pred[1:4, 6:9] = False
    pred[2, 7] = True  # smaller FP: positive wins
    assert center_click(gt, pred, np.ones(gt.shape)) == Click(2, 2, True)


def test_ties_go_to_first_pixel_in_row_major_order():
    gt = np.zeros((9, 9), dtype=np.int64)
    gt[5:8, 5:8] = 1
    gt[5:8, 0:3] = 1  # same size, same row band, further left
    gt[0:3, 7:9] = 1  # first in row-major order, but 2 wide: distance 1 at best, loses
    gt[0, 0:4] = 1  # along the border, which counts as outside: distance 1
    empty = np.zeros(gt.shape, dtype=bool)
    assert center_click(gt, empty, np.ones(gt.shape, dtype=bool)) == Click(6, 1, True)


def test_ignore_pixels_are_never_clicked():
    gt = np.ones((7, 7), dtype=np.int64)
    gt[2:5, 2:5] = -1  # the would-be center is ignored, and so are the pixels around it
    clicker = CenterClicker(gt)
    empty = np.zeros(gt.shape, dtype=bool)
    for _ in range(10):
        c = clicker.next_click(empty)
        assert gt[c.y, c.x] == 1 and c.is_positive


def test_initial_clicks_are_excluded():
    gt = np.zeros((9, 9), dtype=np.int64)
    gt[2:7, 1:6] = 1
    clicker = CenterClicker(gt, clicks=[(4, 3, True)])
    assert clicker.next_click(np.zeros(gt.shape, dtype=bool)) == Click(3, 2, True)
    assert clicker.clicks == [Click(4, 3, True), Click(3, 2, True)]


def test_input_validation():
    gt = np.zeros((4, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        CenterClicker(gt).next_click(np.zeros((5, 4), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        CenterClicker(gt).next_click(np.full((4, 5), 0.3))
    with pytest.raises(ValueError, match="H x W"):
        CenterClicker(np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="outside"):
        CenterClicker(gt, clicks=[(4, 0, True)])
    assert CenterClicker(gt).next_click(np.zeros((4, 5), dtype=np.uint8)) == Click(0, 0, False)
