"""The synthetic source generator: determinism, layouts and the properties tests rely on."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from shards.synthetic import write_cocolvis, write_davis


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_cocolvis(split_dir: Path) -> dict[str, dict]:
    """Decode the source layout independently of shards/ (plain pickle: the fixture is ours)."""
    annotation = pickle.loads((split_dir / "hannotation.pickle").read_bytes())
    out = {}
    for image_id, entry in annotation.items():
        layers, mapping = pickle.loads((split_dir / "masks" / f"{image_id}.pickle").read_bytes())
        decoded = [cv2.imdecode(np.asarray(b).reshape(-1), cv2.IMREAD_UNCHANGED) for b in layers]
        masks = {inst: decoded[layer] == value for inst, (layer, value) in enumerate(mapping)}
        out[image_id] = {"entry": entry, "masks": masks, "mapping": mapping, "raw_layers": layers}
    return out


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cocolvis"
    write_cocolvis(root, 30, size=(72, 96), seed=3)
    return root


def test_cocolvis_layout(coco: Path) -> None:
    split = coco / "train"
    ids = sorted(p.stem for p in (split / "images").glob("*.jpg"))
    assert len(ids) == 30 and all(len(i) == 12 and i.isdigit() for i in ids)
    assert ids == sorted(p.stem for p in (split / "masks").glob("*.pickle"))
    data = (split / "masks" / f"{ids[0]}.pickle").read_bytes()
    assert data[:2] == b"\x80\x03" and b"numpy.core.multiarray" in data  # protocol 3, numpy 1 names
    image = cv2.imread(str(split / "images" / f"{ids[0]}.jpg"))
    assert image.shape == (72, 96, 3)
    shapes = {np.asarray(b).shape[1:] for v in _read_cocolvis(split).values() for b in v["raw_layers"]}
    assert shapes == {(), (1,)}  # both OpenCV buffer shapes occur


def test_determinism(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_cocolvis(tmp_path / name / "coco", 6, size=64, seed=seed)
        write_davis(tmp_path / name / "davis", 4, seed=seed, size=64)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert sum(a[k] != c[k] for k in a) >= len(a) - 2  # everything but (maybe) an empty-image pickle differs


def test_generated_properties(coco: Path) -> None:
    data = _read_cocolvis(coco / "train")
    no_object = [i for i, v in data.items() if not v["mapping"]]
    assert no_object, "some images have no object at all"
    only_stuff = [i for i, v in data.items() if v["mapping"] and v["entry"]["num_instance_masks"] == 0]
    assert only_stuff
    stuff = [i for i, v in data.items() if len(v["mapping"]) > v["entry"]["num_instance_masks"]]
    assert len(stuff) > len(only_stuff), "stuff also appears next to objects"

    overlapping = holes = parents = 0
    for v in data.values():
        entry, masks, mapping = v["entry"], v["masks"], v["mapping"]
        links = set()
        for inst, node in entry["hierarchy"].items():
            if node:
                for child in node["children"]:
                    assert entry["hierarchy"][child]["parent"] == inst
                    links.add((inst, child))
                    parents += 1
        for a in masks:
            assert masks[a].any(), "no empty objects"
            filled = np.zeros(masks[a].shape, np.uint8)
            contours, _ = cv2.findContours(masks[a].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(filled, contours, -1, 1, -1)
            holes += bool((filled.astype(bool) & ~masks[a]).sum() > 5)
            for b in masks:
                if a < b and (masks[a] & masks[b]).any():
                    # Only a part overlaps its object (occluded objects are annotated by their visible part),
                    # and overlapping objects sit in different layers.
                    assert (a, b) in links or (b, a) in links
                    assert mapping[a][0] != mapping[b][0]
                    overlapping += 1
    assert overlapping and parents and holes


def test_davis_layout_and_soft_edges(tmp_path: Path) -> None:
    names = write_davis(tmp_path, 6, seed=1, size=(64, 80))
    soft = 0
    for name in names:
        image = cv2.imread(str(tmp_path / "img" / f"{name}.jpg"))
        gt = cv2.imread(str(tmp_path / "gt" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == gt.shape == (64, 80, 3)
        assert (gt > 0).any()
        soft += bool(((gt > 0) & (gt < 255)).any())
    assert 0 < soft < len(names)  # some soft-edged masks, some hard

