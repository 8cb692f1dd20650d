"""COCO+LVIS built from LVIS v1 + COCO panoptic inputs: every rule's outcome on hand-made scenes.

Objects are axis-aligned rectangles, whose pixels are known exactly (``fillPoly`` fills a
rectangle polygon with its border), so the expected masks are written down independently.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import shards
from shards.checksum import sha256_file
from shards.cli import main
from shards.cocolvis_build import (BuildOptions, CocoLvisBuildConverter, check_opencv, containment_hierarchy,
                                   rasterize_polygons)
from shards.converter import ConversionError
from shards.synthetic import LvisPanopticImage, write_lvis_panoptic
from shards.writer import convert

H = W = 128


def rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Inclusive rows r0..r1 and columns c0..c1."""
    m = np.zeros((H, W), bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def poly(r0: int, r1: int, c0: int, c1: int) -> list[float]:
    """The same rectangle as an LVIS polygon (x, y pairs), with off-grid corners that round to it."""
    return [c0 - 0.4, r0 + 0.3, c1 + 0.2, r0 - 0.1, c1 + 0.49, r1, c0, r1 + 0.4]


# A: COCO thing duplicated by LVIS, a COCO thing kept, things at 80 / 78 px, stuff at 500 / 504 px,
#    stuff partly under an object.
A_LVIS = [(10, 29, 10, 29), (0, 7, 40, 49), (56, 61, 40, 52), (0, 19, 100, 127)]
A_PANOPTIC = [(rect(10, 29, 10, 29), True, False),   # = LVIS 0: dropped
              (rect(40, 55, 5, 20), True, True),     # crowd thing, no LVIS match: kept
              (rect(70, 75, 60, 72), True, False),   # 78 px: below the area threshold
              (rect(100, 119, 0, 24), False, False),  # stuff of 500 px: dropped (needs > 500)
              (rect(100, 120, 30, 53), False, False),  # stuff of 504 px: kept
              (rect(0, 39, 100, 127), False, False)]  # stuff under LVIS 3: keeps rows 20..39
# B: nesting 4 levels deep, a sibling, near-duplicate LVIS masks, overlapping objects.
B_LVIS = [(0, 99, 0, 99), (10, 59, 10, 59), (20, 39, 20, 39), (70, 89, 70, 89), (25, 34, 25, 34),
          (100, 119, 0, 19), (100, 119, 0, 18), (100, 127, 60, 90), (110, 127, 80, 110)]


def scenes() -> list[LvisPanopticImage]:
    return [
        LvisPanopticImage("000000000001", H, W, [[poly(*r)] for r in A_LVIS], A_PANOPTIC),
        LvisPanopticImage("000000000002", H, W, [[poly(*r)] for r in B_LVIS]),
        # LVIS lists the image but annotates nothing: not part of the dataset
        LvisPanopticImage("000000000003", H, W, [], [(rect(0, 60, 0, 60), True, False)]),
        # everything below the thresholds: no object left
        LvisPanopticImage("000000000004", H, W, [[poly(0, 5, 0, 5)]], [(rect(0, 9, 0, 9), False, False)]),
        # a 2-point polygon (skipped, counted) next to a good one; a segment id absent from the PNG
        LvisPanopticImage("000000000005", H, W, [[[1.0, 1.0, 50.0, 50.0], poly(60, 79, 60, 79)]], [],
                          extra_segment_ids=[12345]),
        LvisPanopticImage("000000000006", H, W, [[poly(0, 30, 0, 30)]], in_panoptic=False),  # LVIS only
        LvisPanopticImage("000000000007", H, W, [], [(rect(0, 30, 0, 30), True, False)], in_lvis=False),
        LvisPanopticImage("000000000008", H, W, [[poly(0, 30, 0, 30)]], []),  # PNG removed below
        LvisPanopticImage("000000000009", H, W, [[poly(0, 30, 0, 30)]], []),  # PNG of the wrong size below
        LvisPanopticImage("000000000010", H, W, [[poly(0, 30, 0, 30)]], []),  # image removed below
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("lvis_coco")
    paths = write_lvis_panoptic(root, scenes())
    (paths["panoptic_dir"] / "000000000008.png").unlink()
    cv2.imwrite(str(paths["panoptic_dir"] / "000000000009.png"), np.zeros((H, W + 1, 3), np.uint8))
    (paths["images"] / "000000000010.jpg").unlink()
    lvis = json.loads(paths["lvis"].read_text())
    lvis["annotations"].append({"id": 999, "image_id": 777, "category_id": 1, "segmentation": [poly(0, 9, 0, 9)]})
    paths["lvis"].write_text(json.dumps(lvis))
    conv = CocoLvisBuildConverter(lvis_json=paths["lvis"], panoptic_json=paths["panoptic_json"],
                                  panoptic_dir=paths["panoptic_dir"], images=paths["images"])
    out = root / "shards"
    manifest = convert(conv, out, workers=0, samples_per_shard=2, progress=False, max_skip_fraction=1.0)
    return paths, out, manifest, {Path(s.source).stem: s for s in shards.open_dataset(out)}


def _masks(sample) -> list[np.ndarray]:
    return [o.mask for o in sample.objects]


def test_coco_things_are_kept_only_where_no_lvis_mask_matches_and_stuff_above_its_threshold(built):
    _, _, _, samples = built
    a = samples["000000000001"]
    # kept COCO things first (the crowd one), then LVIS in order; LVIS 2 (78 px) and COCO 2 (78 px) dropped
    expected_things = [rect(40, 55, 5, 20), rect(*A_LVIS[0]), rect(*A_LVIS[1]), rect(*A_LVIS[3])]
    expected_stuff = [rect(100, 120, 30, 53), rect(20, 39, 100, 127)]
    assert [o.is_stuff for o in a.objects] == [False] * 4 + [True] * 2
    assert [o.id for o in a.objects] == list(range(6))
    for got, want in zip(_masks(a), expected_things + expected_stuff):
        assert np.array_equal(got, want)
    assert all(o.parent is None and o.children == [] for o in a.objects)  # nothing nested


def test_hierarchy_duplicates_and_overlaps(built):
    _, _, _, samples = built
    b = samples["000000000002"]
    kept = [r for k, r in enumerate(B_LVIS) if k != 5]  # LVIS 5 nearly equals the later LVIS 6
    assert len(b.objects) == len(kept) and not any(o.is_stuff for o in b.objects)
    for got, want in zip(_masks(b), kept):
        assert np.array_equal(got, rect(*want))
    tree = {o.id: (o.parent, o.children) for o in b.objects}
    # 0 contains 1 and 3; 1 contains 2; 2 contains 4 (depth 3); the overlapping 6 and 7 stay apart
    assert tree == {0: (None, [1, 3]), 1: (0, [2]), 2: (1, [4]), 3: (0, []), 4: (2, []),
                    5: (None, []), 6: (None, []), 7: (None, [])}
    assert np.logical_and(b.objects[6].mask, b.objects[7].mask).sum() == 18 * 11  # overlap kept in both


def test_bad_inputs_and_rule_counts_are_recorded(built):
    paths, _, manifest, samples = built
    assert sorted(samples) == ["000000000001", "000000000002", "000000000005"]
    assert np.array_equal(samples["000000000005"].objects[0].mask, rect(60, 79, 60, 79))
    skipped = {Path(e["item"]).stem: e["reason"] for e in manifest["skipped"]}
    assert skipped == {"000000000004": "no_objects", "000000000008": "missing_panoptic_png",
                       "000000000009": "panoptic_size_mismatch", "000000000010": "missing_image"}
    rules = manifest["build"]["rules"]
    assert rules == {
        "coco_below_min_area": 1, "coco_image_not_in_lvis": 2, "coco_kept": 1, "coco_matched_by_lvis": 1,
        "lvis_annotation_without_image": 1, "lvis_below_min_area": 2, "lvis_duplicates": 1,
        "lvis_images_without_panoptic": 1, "lvis_kept": 12, "polygon_too_few_points": 1,
        "segment_not_in_png": 1, "stuff_below_min_area": 1, "stuff_kept": 2,
        "skipped_missing_image": 1, "skipped_missing_panoptic_png": 1, "skipped_no_objects": 1,
        "skipped_panoptic_size_mismatch": 1,
    }, rules
    inputs = manifest["build"]["inputs"]
    assert inputs["lvis_json"]["sha256"] == sha256_file(paths["lvis"])
    assert manifest["options"] == {**BuildOptions().__dict__, "opencv": cv2.__version__}
    assert manifest["skip_counts"] == {
        "bad_input": {"missing_image": 1, "missing_panoptic_png": 1, "panoptic_size_mismatch": 1},
        "rule": {"no_objects": 1}}
    assert sorted((Path(e["item"]).stem, e["flag"]) for e in manifest["flagged"]) == [
        ("000000000005", "polygon_too_few_points"), ("000000000005", "segment_not_in_png")]
    assert manifest["totals"] == {"images": 3, "instances": 4 + 8 + 1, "stuff": 2, "skipped": 4}


def test_cli_options_change_the_rules(built, tmp_path):
    paths, out, manifest, _ = built
    argv = ["cocolvis-build", "--lvis", str(paths["lvis"]), "--panoptic-json", str(paths["panoptic_json"]),
            "--panoptic-dir", str(paths["panoptic_dir"]), "--images", str(paths["images"]), "--workers", "0",
            "--samples-per-shard", "2", "--max-skip-fraction", "1"]
    assert main(argv + ["--out", str(tmp_path / "same")]) == 0
    same = json.loads((tmp_path / "same" / "manifest.json").read_text())
    assert [s["sha256"] for s in same["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert main(argv + ["--out", str(tmp_path / "strict"), "--min-object-area", "400", "--min-stuff-area", "600"]) == 0
    strict = {Path(s.source).stem: s for s in shards.open_dataset(tmp_path / "strict")}
    a = strict["000000000001"]
    assert [int(o.mask.sum()) for o in a.objects] == [400, 560]  # LVIS 0 (400 px) and the stuff rows 20..39
    assert main(argv + ["--out", str(tmp_path / "x"), "--max-skip-fraction", "0.1"]) == 1  # 3 of 7 bad inputs


def test_rasterize_polygons_rounds_and_skips_short_polygons():
    mask, skipped = rasterize_polygons([poly(3, 9, 4, 12), [0.0, 0.0, 5.0, 5.0]], 16, 16)
    assert skipped == 1
    expected = np.zeros((16, 16), bool)
    expected[3:10, 4:13] = True
    assert np.array_equal(mask, expected)


def test_containment_hierarchy_breaks_area_ties_like_ritm():
    # two equal squares inside a big one: the later index is visited first, so it is child 0
    masks = [np.pad(np.ones((10, 10), bool), ((0, 90), (0, 90))),
             np.pad(np.ones((2, 2), bool), ((1, 97), (1, 97))),
             np.pad(np.ones((2, 2), bool), ((5, 93), (5, 93)))]
    assert containment_hierarchy(masks) == [(None, [2, 1], 0), (0, [], 1), (0, [], 1)]


@pytest.mark.parametrize("version, ok", [("4.5.5", True), ("4.7.0", True), ("4.8.0", False), ("4.10.0", False),
                                         ("4.11.0", True), ("5.0.0", True)])
def test_opencv_versions_whose_fillpoly_differs_are_refused(version, ok):
    if ok:
        check_opencv(version)
    else:
        with pytest.raises(ConversionError, match=f"OpenCV {version}"):
            check_opencv(version)


def test_polygons_fill_exactly_as_opencv_4_7_did():
    ref = np.load(Path(__file__).parent / "data" / "fillpoly_opencv47.npz")
    assert str(ref["opencv"]) == "4.7.0"
    polygons = np.split(ref["coords"], np.cumsum(ref["lengths"])[:-1])
    masks = np.unpackbits(ref["masks"], axis=-1).astype(bool)
    assert len(polygons) == len(masks) == 200
    for k, (p, want) in enumerate(zip(polygons, masks)):
        got, skipped = rasterize_polygons([p.tolist()], 128, 128)
        assert skipped == 0 and np.array_equal(got, want), f"polygon {k}: {int((got != want).sum())} pixels differ"
