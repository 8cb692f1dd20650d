"""Source -> shards -> samples: exact round trips, manifest checks, damage and bad input."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

import shards
from shards import safe_pickle
from shards.cli import main
from shards.cocolvis import CocoLvisConverter
from shards.folder import HQSEG44K_SUBSETS, FolderConverter, HQSeg44kConverter, davis_converter
from shards.format import encode_sample, pack_layers
from shards.synthetic import write_cocolvis, write_davis, write_hqseg44k
from shards.tar_reader import iter_shard
from shards.writer import convert


def _convert(converter, out: Path, **kw) -> dict:
    kw.setdefault("workers", 0)
    kw.setdefault("samples_per_shard", 7)
    return convert(converter, out, progress=False, **kw)


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _source_cocolvis(split_dir: Path) -> dict[str, dict]:
    """Decode the source independently of shards/ (plain pickle: these fixtures are ours)."""
    annotation = pickle.loads((split_dir / "hannotation.pickle").read_bytes())
    out = {}
    for image_id in sorted(annotation):
        entry = annotation[image_id]
        encoded, mapping = pickle.loads((split_dir / "masks" / f"{image_id}.pickle").read_bytes())
        layers = [cv2.imdecode(np.asarray(b).reshape(-1), cv2.IMREAD_UNCHANGED) for b in encoded]
        pairs = mapping.items() if isinstance(mapping, dict) else enumerate(mapping)
        objects = {}
        for inst, (layer, value) in pairs:
            node = entry["hierarchy"].get(inst) or {"parent": None, "children": []}
            objects[inst] = {
                "mask": layers[layer] == value,
                "is_stuff": inst >= entry["num_instance_masks"],
                "parent": node["parent"],
                "children": node["children"],
            }
        out[image_id] = {"image": _rgb(split_dir / "images" / f"{image_id}.jpg"), "objects": objects}
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def coco_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src") / "cocolvis"
    write_cocolvis(root, 23, size=((56, 80), (64, 96)), seed=11)
    return root


@pytest.fixture(scope="module")
def coco_out(coco_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "cocolvis"
    _convert(CocoLvisConverter(coco_src), out)
    return out


@pytest.fixture(scope="module")
def davis_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src") / "davis"
    write_davis(root, 9, seed=2, size=(60, 84))
    return root


# --- round trips -------------------------------------------------------------------------


def test_cocolvis_round_trip(coco_src: Path, coco_out: Path) -> None:
    source = _source_cocolvis(coco_src / "train")
    samples = list(shards.open_dataset(coco_out))
    assert [s.source for s in samples] == [f"train/images/{i}.jpg" for i in source]
    assert [s.key for s in samples] == [f"{i:08d}" for i in range(len(source))]
    for sample, (image_id, src) in zip(samples, source.items()):
        assert np.array_equal(sample.image, src["image"])
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
        assert [o.id for o in sample.objects] == sorted(src["objects"])
        for obj in sample.objects:
            want = src["objects"][obj.id]
            assert np.array_equal(obj.mask, want["mask"]), (image_id, obj.id)
            assert (obj.is_stuff, obj.parent, obj.children) == (want["is_stuff"], want["parent"], want["children"])
        assert ("no_objects" in sample.flags) == (not src["objects"])
        assert ("only_stuff" in sample.flags) == bool(src["objects"] and all(o["is_stuff"] for o in src["objects"].values()))
    assert any(o.parent is not None for s in samples for o in s.objects)
    assert any(o.is_stuff for s in samples for o in s.objects)


def test_pool_writes_identical_shards(coco_src: Path, coco_out: Path, tmp_path: Path) -> None:
    manifest = _convert(CocoLvisConverter(coco_src), tmp_path, workers=2)
    assert manifest["shards"] == shards.read_manifest(coco_out)["shards"]
    for name in (r["name"] for r in manifest["shards"]):
        assert (tmp_path / name).read_bytes() == (coco_out / name).read_bytes()


def test_davis_round_trip(davis_src: Path, tmp_path: Path) -> None:
    manifest = _convert(davis_converter(davis_src), tmp_path, samples_per_shard=4)
    samples = list(shards.open_dataset(tmp_path))
    names = sorted(p.stem for p in (davis_src / "img").iterdir())
    assert [s.source for s in samples] == [f"img/{n}.jpg" for n in names]
    for sample, name in zip(samples, names):
        gt = cv2.imread(str(davis_src / "gt" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(sample.image, _rgb(davis_src / "img" / f"{name}.jpg"))
        assert len(sample.objects) == 1 and sample.objects[0].id == 1
        assert np.array_equal(sample.objects[0].mask, (gt > 0).any(axis=2))
    files = sorted(p for p in davis_src.rglob("*") if p.is_file())
    assert manifest["source"]["sha256"] == {p.relative_to(davis_src).as_posix(): _sha(p) for p in files}
    assert manifest["source"]["files"] == len(files) == 18
    assert (manifest["format"], manifest["split"], len(manifest["shards"])) == ("davis", "val", 3)



@pytest.mark.parametrize("split", ["val", "train"])
def test_hqseg44k_round_trip(tmp_path: Path, split: str) -> None:
    root = tmp_path / "HQSeg-44K"
    written = write_hqseg44k(root, 2, split=split, seed=3, size=40)
    subsets = [s for s in HQSEG44K_SUBSETS if s[0] == split]
    assert list(written) == [s[1] for s in subsets]
    manifest = _convert(HQSeg44kConverter(root=root, split=split), tmp_path / "out", samples_per_shard=3)
    samples = list(shards.open_dataset(tmp_path / "out"))
    expected = [f"{images}/{n}.jpg" for _s, name, images, _m in subsets for n in sorted(written[name])]
    assert [s.source for s in samples] == expected  # subset table order, then file order; '#', spaces, dots kept
    for sample, (_s, name, images, masks) in zip(samples, [s for s in subsets for _ in range(2)]):
        stem = Path(sample.source).name[: -len(".jpg")]
        gt = cv2.imread(str(root / masks / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(sample.image, _rgb(root / images / f"{stem}.jpg"))
        assert [o.id for o in sample.objects] == [1]
        assert np.array_equal(sample.objects[0].mask, (gt > 0).any(axis=2))  # soft edges count as object
    assert (manifest["format"], manifest["split"], manifest["options"]["subsets"]) == ("hqseg44k", split, list(written))
    assert (manifest["totals"]["images"], manifest["totals"]["instances"]) == (2 * len(subsets), 2 * len(subsets))
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if split == "val":  # evaluation set: every source file's sha256
        assert manifest["source"]["sha256"] == {p.relative_to(root).as_posix(): _sha(p) for p in files}
    else:
        assert "sha256" not in manifest["source"] and manifest["source"]["files"] == len(files)


def test_hqseg44k_subsets_and_missing_folders(tmp_path: Path) -> None:
    root = tmp_path / "hq"
    write_hqseg44k(root, 1, split="val", size=32)
    conv = HQSeg44kConverter(root=root, split="val", subsets=("COIFT",))
    assert [i[1] for i in conv.list_items()] == ["thin_object_detection/COIFT/images/COIFT img.0000.jpg"]
    with pytest.raises(ValueError, match="unknown val subset.*'DUTS-TR'"):
        HQSeg44kConverter(root=root, split="val", subsets=("DUTS-TR",))
    shutil.rmtree(root / "thin_object_detection" / "HRSOD" / "masks_max255")
    with pytest.raises(FileNotFoundError, match="masks_max255 of subset HRSOD"):
        HQSeg44kConverter(root=root, split="val")
    assert main(["hqseg44k", "--root", str(root), "--out", str(tmp_path / "o"), "--subsets", "DIS5K-VD", "COIFT",
                 "--workers", "0"]) == 0
    assert [s.source.split("/")[0] for s in shards.open_dataset(tmp_path / "o")] == ["DIS5K", "thin_object_detection"]
    assert main(["hqseg44k", "--root", str(root), "--out", str(tmp_path / "p"), "--workers", "0"]) == 1  # HRSOD gone


def _write_cocolvis_item(split_dir: Path, image_id: str, image: np.ndarray, layers: list[np.ndarray],
                         mapping, hierarchy: dict, n_things: int, annotation: dict) -> None:
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(split_dir / "images" / f"{image_id}.jpg"), image)
    encoded = [cv2.imencode(".png", layer)[1] for layer in layers]
    (split_dir / "masks" / f"{image_id}.pickle").write_bytes(pickle.dumps((encoded, mapping), protocol=3))
    annotation[image_id] = {"hierarchy": hierarchy, "num_instance_masks": n_things}


def test_uint16_instance_values(tmp_path: Path) -> None:
    split = tmp_path / "src" / "val"
    wide = np.zeros((40, 50), np.uint16)
    wide[2:10, 3:20], wide[20:30, 5:45] = 300, 40000
    small = np.zeros((40, 50), np.uint8)
    small[5:25, 10:15] = 7
    annotation: dict = {}
    image = np.full((40, 50, 3), 128, np.uint8)
    _write_cocolvis_item(split, "000000000042", image, [wide, small], {0: (0, 300), 1: (0, 40000), 2: (1, 7)},
                         {0: None, 1: {"parent": None, "children": [2], "node_level": 0},
                          2: {"parent": 1, "children": [], "node_level": 1}}, 3, annotation)
    (split / "hannotation.pickle").write_bytes(pickle.dumps(annotation, protocol=3))
    _convert(CocoLvisConverter(tmp_path / "src", split="val"), tmp_path / "out")

    [path] = shards.shard_paths(tmp_path / "out")
    with tarfile.open(path) as tar:
        layers = np.load(io.BytesIO(tar.extractfile("00000000.layers.npz").read()))["layers"]
        meta = json.loads(tar.extractfile("00000000.meta.json").read())
    assert layers.dtype == np.uint16 and layers.shape == (2, 40, 50)
    assert [(o["id"], o["layer"], o["value"]) for o in meta["objects"]] == [(0, 0, 300), (1, 0, 40000), (2, 1, 7)]
    [sample] = shards.open_dataset(tmp_path / "out")
    assert np.array_equal(sample.objects[1].mask, wide == 40000)
    assert (sample.objects[1].children, sample.objects[2].parent) == ([2], 1)


def test_pack_layers_dtypes() -> None:
    assert pack_layers([np.full((2, 2), 255, np.int64)], 2, 2).dtype == np.uint8
    assert pack_layers([np.full((2, 2), 256, np.int64)], 2, 2).dtype == np.uint16
    assert pack_layers([np.full((2, 2), 70000, np.int64)], 2, 2).dtype == np.int32
    assert pack_layers([], 3, 4).shape == (0, 3, 4)


def test_images_folder_may_be_a_symlink(coco_src: Path, coco_out: Path, tmp_path: Path) -> None:
    split = tmp_path / "linked" / "train"
    split.mkdir(parents=True)
    shutil.copytree(coco_src / "train" / "masks", split / "masks")
    shutil.copy(coco_src / "train" / "hannotation.pickle", split)
    (split / "images").symlink_to(coco_src / "train" / "images", target_is_directory=True)
    manifest = _convert(CocoLvisConverter(tmp_path / "linked"), tmp_path / "out")
    assert manifest["shards"] == shards.read_manifest(coco_out)["shards"]


# --- manifest and damage ---------------------------------------------------------------------


def test_manifest_counts_and_checksums(coco_src: Path, coco_out: Path) -> None:
    manifest = shards.read_manifest(coco_out)
    source = _source_cocolvis(coco_src / "train")
    assert (manifest["format"], manifest["split"], manifest["version"]) == ("cocolvis", "train", 1)
    assert [r["samples"] for r in manifest["shards"]] == [7, 7, 7, 2]
    objects = [o for v in source.values() for o in v["objects"].values()]
    assert manifest["totals"] == {
        "images": 23,
        "instances": sum(not o["is_stuff"] for o in objects),
        "stuff": sum(o["is_stuff"] for o in objects),
        "skipped": 0,
    }
    paths = shards.shard_paths(coco_out)
    assert all(os.path.isabs(p) for p in paths) and [Path(p).name for p in paths] == sorted(Path(p).name for p in paths)
    for rec, path in zip(manifest["shards"], paths):
        assert rec["sha256"] == _sha(Path(path)) and rec["bytes"] == os.path.getsize(path)
    files = [p for p in (coco_src / "train").rglob("*") if p.is_file()]
    assert manifest["source"]["files"] == len(files) and manifest["source"]["bytes"] == sum(p.stat().st_size for p in files)
    assert "sha256" not in manifest["source"]
    flags = Counter(f["flag"] for f in manifest["flagged"])
    assert flags["no_objects"] == 2 and flags["only_stuff"] == 2  # ids 3, 13 and 7, 17
    assert len(shards.open_dataset(coco_out)) == 23


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    elif how == "truncate":
        data = data[: len(data) // 2]
    else:  # overwrite the header of a member in the middle: tar readers just stop there
        with tarfile.open(path) as tar:
            offset = tar.getmembers()[6].offset  # first member of the third sample
        data[offset : offset + 512] = bytes(512)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "header"])
def test_damaged_shard_is_noticed(coco_out: Path, tmp_path: Path, how: str) -> None:
    out = tmp_path / "copy"
    shutil.copytree(coco_out, out)
    name = shards.read_manifest(out)["shards"][1]["name"]
    _damage(out / name, how)
    with pytest.raises(shards.ManifestMismatchError, match=name):
        shards.open_dataset(out)
    if how == "header":  # without verification the early end is still caught by the sample count
        with pytest.raises(shards.ManifestMismatchError, match=name):
            list(shards.open_dataset(out, verify=False))


def test_missing_shard_and_wrong_count(coco_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(coco_out, out)
    manifest = shards.read_manifest(out)
    manifest["shards"][0]["samples"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(shards.ManifestMismatchError, match=manifest["shards"][0]["name"]):
        shards.open_dataset(out)
    (out / manifest["shards"][2]["name"]).unlink()
    with pytest.raises(shards.ManifestMismatchError, match="missing"):
        shards.open_dataset(out)


def test_verification_names_every_bad_shard(coco_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(coco_out, out)
    names = [rec["name"] for rec in shards.read_manifest(out)["shards"]]
    _damage(out / names[0], "truncate")
    (out / names[2]).unlink()
    with pytest.raises(shards.ManifestMismatchError) as err:
        shards.open_dataset(out)
    msg = str(err.value)
    assert str(out) in msg and "2 of 4 shard(s)" in msg
    assert f"{names[0]}: size" in msg and f"{names[2]}: missing" in msg and names[1] not in msg


# --- bad input ---------------------------------------------------------------------------------


# The classic attack, written by hand so the global is literally os.system (pickle.dumps would say posix.system).
EVIL_PICKLE = b"\x80\x03cos\nsystem\nX\x1c\x00\x00\x00echo unpickled > evil-marker\x85R."


@pytest.fixture()
def bad_coco(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    write_cocolvis(root, 12, size=48, seed=4)
    split = root / "train"
    img = lambda i: split / "images" / f"{i:012d}.jpg"  # noqa: E731
    msk = lambda i: split / "masks" / f"{i:012d}.pickle"  # noqa: E731
    img(0).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    img(1).write_bytes(img(1).read_bytes()[:300])
    img(2).unlink()
    layer = np.zeros((30, 30), np.uint8)
    layer[3:9, 3:9] = 1
    msk(4).write_bytes(pickle.dumps(([cv2.imencode(".png", layer)[1]], [(0, 1)]), protocol=3))
    encoded, mapping = pickle.loads(msk(5).read_bytes())
    msk(5).write_bytes(pickle.dumps((encoded, list(mapping) + [(0, 250)]), protocol=3))  # value 250 is nowhere
    msk(6).write_bytes(EVIL_PICKLE)
    msk(8).write_bytes(b"\x80\x03garbage")
    msk(9).unlink()
    return root


def test_bad_cocolvis_inputs_are_counted(bad_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = _convert(CocoLvisConverter(bad_coco), tmp_path / "out", max_skip_fraction=1.0)
    reasons = {e["item"].split("/")[-1][:12]: e["reason"] for e in manifest["skipped"]}
    assert reasons == {
        "000000000000": "corrupt_image",
        "000000000001": "corrupt_image",
        "000000000002": "missing_image",
        "000000000004": "size_mismatch",
        "000000000006": "unsafe_pickle",
        "000000000008": "bad_pickle",
        "000000000009": "missing_mask",
    }
    assert "os.system" in next(e["detail"] for e in manifest["skipped"] if e["reason"] == "unsafe_pickle")
    assert not (tmp_path / "evil-marker").exists()
    assert manifest["totals"]["images"] == 5 and manifest["totals"]["skipped"] == 7
    flagged = {(e["item"].split("/")[-1][:12], e["flag"]) for e in manifest["flagged"]}
    assert ("000000000005", "empty_object") in flagged and ("000000000003", "no_objects") in flagged
    samples = {s.source[-16:-4]: s for s in shards.open_dataset(tmp_path / "out")}
    assert sorted(samples) == ["000000000003", "000000000005", "000000000007", "000000000010", "000000000011"]
    assert samples["000000000003"].objects == [] and "no_objects" in samples["000000000003"].flags
    n_source = len(pickle.loads((bad_coco / "train" / "masks" / "000000000005.pickle").read_bytes())[1])
    assert len(samples["000000000005"].objects) == n_source - 1


def test_truncated_jpeg_detection() -> None:
    from shards.converter import _jpeg_complete

    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    data = data.tobytes()
    assert _jpeg_complete(data) and _jpeg_complete(data + b"\x00\x00")
    assert not _jpeg_complete(data[: len(data) // 2])


def test_max_skip_fraction(bad_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(shards.ConversionError, match="7 of 12"):
        _convert(CocoLvisConverter(bad_coco), tmp_path, max_skip_fraction=0.5)
    assert shards.read_manifest(tmp_path)["totals"]["skipped"] == 7  # the manifest is written first
    assert main(["cocolvis", "--root", str(bad_coco), "--out", str(tmp_path / "cli"), "--workers", "0"]) == 1
    (tmp_path / "empty" / "img").mkdir(parents=True)
    (tmp_path / "empty" / "gt").mkdir()
    with pytest.raises(shards.ConversionError, match="no source items"):
        _convert(davis_converter(tmp_path / "empty"), tmp_path / "empty-out")


def test_bad_folder_inputs_and_odd_names(tmp_path: Path) -> None:
    images, masks = tmp_path / "ds" / "images", tmp_path / "ds" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
    gt = np.zeros((32, 40), np.uint8)
    gt[5:20, 8:30] = 255
    odd = "1#Bag#0001 copy.v2.final"
    cv2.imwrite(str(images / f"{odd}.jpg"), picture)
    cv2.imwrite(str(masks / f"{odd}.png"), np.dstack([gt, gt * 0, gt * 0]))  # object in one channel only
    cv2.imwrite(str(images / "bitmap.bmp"), picture)
    cv2.imwrite(str(masks / "bitmap.png"), gt)
    cv2.imwrite(str(images / "empty.png"), picture)
    cv2.imwrite(str(masks / "empty.png"), np.zeros_like(gt))
    cv2.imwrite(str(images / "wrong size.jpg"), picture)
    cv2.imwrite(str(masks / "wrong size.png"), gt[:20])
    cv2.imwrite(str(images / "no mask.jpg"), picture)
    cv2.imwrite(str(masks / "no image.png"), gt)
    (images / "broken.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(masks / "broken.png"), gt)

    manifest = _convert(FolderConverter(images=images, masks=masks), tmp_path / "out", max_skip_fraction=1.0)
    assert {e["item"]: e["reason"] for e in manifest["skipped"]} == {
        "images/broken.jpg": "corrupt_image",
        "masks/no image.png": "missing_image",
        "images/no mask.jpg": "missing_mask",
        "images/wrong size.jpg": "size_mismatch",
    }
    samples = {s.source: s for s in shards.open_dataset(tmp_path / "out")}
    assert sorted(samples) == [f"images/{odd}.jpg", "images/bitmap.bmp", "images/empty.png"]
    assert np.array_equal(samples[f"images/{odd}.jpg"].objects[0].mask, gt > 0)
    assert np.array_equal(samples[f"images/{odd}.jpg"].image, _rgb(images / f"{odd}.jpg"))
    assert samples["images/bitmap.bmp"].flags == ["reencoded_png"]
    assert np.array_equal(samples["images/bitmap.bmp"].image, picture[..., ::-1])  # lossless
    assert samples["images/empty.png"].objects == [] and "no_objects" in samples["images/empty.png"].flags
    assert set(manifest["source"]["sha256"]) == {p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds").rglob("*.*")}


# --- reading ---------------------------------------------------------------------------------


def test_partial_iteration_closes_files(coco_out: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            it = iter(shards.open_dataset(coco_out, verify=False))
            next(it)
            del it
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(os.listdir("/proc/self/fd")) == fds


def test_webdataset_grouping_agrees(coco_out: Path) -> None:
    """decode_sample accepts what webdataset's tar expansion and key grouping yield.

    webdataset 1.0.2's WebDataset never closes its shard files (ResourceWarning even
    after a full pass), so the streams are opened and closed here.
    """
    with contextlib.ExitStack() as stack:
        sources = [{"url": p, "stream": stack.enter_context(open(p, "rb"))} for p in shards.shard_paths(coco_out)]
        raws = wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(sources))
        via_wds = [shards.decode_sample(raw) for raw in raws]
    direct = list(shards.open_dataset(coco_out))
    assert [(s.key, s.source) for s in via_wds] == [(s.key, s.source) for s in direct]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(via_wds, direct))
    assert all(np.array_equal(a.objects[i].mask, b.objects[i].mask) for a, b in zip(via_wds, direct) for i in range(len(a.objects)))


def test_decode_errors_name_shard_and_key(coco_out: Path) -> None:
    raw = next(iter_shard(shards.shard_paths(coco_out)[0]))
    url = raw["__url__"]
    broken = [
        {**raw, "image.jpg": raw["image.jpg"][:40]},
        {k: v for k, v in raw.items() if k != "layers.npz"},
        {**raw, "layers.npz": b"PK\x03\x04 nonsense"},
        {**raw, "layers.npz": encode_sample(b"", "png", np.zeros((1, 5, 5), np.uint8), [], "x")["layers.npz"]},
        {**raw, "meta.json": b"{"},
    ]
    for bad in broken:
        with pytest.raises(shards.ShardFormatError, match=f"{url}.*{raw['__key__']}"):
            shards.decode_sample(bad)


# --- safe pickle and CLI -------------------------------------------------------------------


def test_safe_pickle(tmp_path: Path) -> None:
    evil = tmp_path / "evil name.pickle"
    evil.write_bytes(EVIL_PICKLE)
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"evil name\.pickle: refused global os\.system"):
        safe_pickle.load(evil)
    assert issubclass(safe_pickle.UnsafePickleError, ValueError)
    evil.write_bytes(pickle.dumps({"a": [Path("x")]}, protocol=3))
    with pytest.raises(safe_pickle.UnsafePickleError, match="pathlib"):
        safe_pickle.load(evil)

    value = ([np.arange(6, dtype=np.uint8).reshape(-1, 1), np.uint8(3)], {1: (0, 2), 2: None}, {"k": "s"})
    data = pickle.dumps(value, protocol=3)
    for blob in (data, data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")):
        path = tmp_path / "ok.pickle"
        path.write_bytes(blob)
        loaded = safe_pickle.load(path)
        assert np.array_equal(loaded[0][0], value[0][0]) and loaded[0][1] == 3 and loaded[1:] == value[1:]


def test_cli_synth_and_convert(tmp_path: Path) -> None:
    argv = ["synth", "--out", str(tmp_path / "src"), "--train-images", "6", "--eval-images", "3", "--seed", "1", "--size", "48"]
    assert main(argv) == 0
    assert main(["cocolvis", "--root", str(tmp_path / "src" / "cocolvis"), "--out", str(tmp_path / "c"), "--workers", "0"]) == 0
    assert main(["davis", "--root", str(tmp_path / "src" / "davis"), "--out", str(tmp_path / "d"), "--workers", "0"]) == 0
    src = tmp_path / "src" / "davis"
    assert main(["folder", "--images", str(src / "img"), "--masks", str(src / "gt"), "--out", str(tmp_path / "f"),
                 "--workers", "0", "--samples-per-shard", "2"]) == 0
    assert len(shards.open_dataset(tmp_path / "c")) == 6
    assert shards.read_manifest(tmp_path / "d")["format"] == "davis"
    assert len(shards.shard_paths(tmp_path / "f")) == 2
    with pytest.raises(SystemExit):
        main(["folder", "--out", str(tmp_path / "x")])


def test_mask_alpha_channel_is_not_the_object(tmp_path: Path) -> None:
    """An RGBA mask (opaque everywhere) reads as its colour channels, as SegNext's cv2.imread does."""
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    image = np.full((20, 30, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "img" / "a.jpg"), image)
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[5:9, 10:20, 1] = 200
    cv2.imwrite(str(tmp_path / "gt" / "a.png"), rgba)
    _convert(davis_converter(tmp_path), tmp_path / "out")
    (sample,) = shards.open_dataset(tmp_path / "out")
    segnext_view = cv2.imread(str(tmp_path / "gt" / "a.png")).max(axis=2) > 0  # SegNext's DAVIS/HQSeg reading
    assert np.array_equal(sample.objects[0].mask, segnext_view) and segnext_view.sum() == 40
