"""Source links that leave the root, and skips by kind (bad input vs the dataset's rules)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import shards
from shards.cli import main
from shards.cocolvis import CocoLvisConverter
from shards.cocolvis_build import CocoLvisBuildConverter
from shards.folder import HQSeg44kConverter, davis_converter
from shards.converter import ConversionError, SkipItem
from shards.synthetic import LvisPanopticImage, write_cocolvis, write_davis, write_hqseg44k, write_lvis_panoptic
from shards.writer import convert


def _convert(converter, out: Path, **kw) -> dict:
    kw.setdefault("workers", 0)
    kw.setdefault("samples_per_shard", 3)
    kw.setdefault("max_skip_fraction", 1.0)
    return convert(converter, out, progress=False, **kw)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shard_bytes(out: Path) -> bytes:
    return b"".join((out / rec["name"]).read_bytes() for rec in shards.read_manifest(out)["shards"])


def _move_out(path: Path, outside: Path) -> Path:
    """Move ``path`` to the folder ``outside`` and leave a link to it in its place."""
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / path.name
    shutil.move(path, target)
    path.symlink_to(target)
    return target


# --- links out of the root ---------------------------------------------------------------


@pytest.fixture()
def linked_davis(tmp_path: Path) -> tuple[Path, Path, Path]:
    """DAVIS root whose image 1 and mask 3 link outside the root; image 2 links inside it."""
    root = tmp_path / "davis"
    write_davis(root, 5, seed=5, size=(40, 56))
    outside_image = _move_out(root / "img" / "synth_0001.jpg", tmp_path / "elsewhere")
    outside_mask = _move_out(root / "gt" / "synth_0003.png", tmp_path / "elsewhere")
    inside = root / "extra" / "synth_0002.jpg"
    inside.parent.mkdir()
    shutil.move(root / "img" / "synth_0002.jpg", inside)
    (root / "img" / "synth_0002.jpg").symlink_to(Path("..") / "extra" / "synth_0002.jpg")
    return root, outside_image, outside_mask


def test_links_out_of_the_root_are_refused_counted_and_named(linked_davis, tmp_path, capsys) -> None:
    root, outside_image, outside_mask = linked_davis
    manifest = _convert(davis_converter(root), tmp_path / "out")
    report = capsys.readouterr().out
    skipped = {e["item"]: e for e in manifest["skipped"]}
    assert sorted(skipped) == ["img/synth_0001.jpg", "img/synth_0003.jpg"]
    assert {e["reason"] for e in skipped.values()} == {"outside_root"}
    assert {e["kind"] for e in skipped.values()} == {"bad_input"}
    assert str(outside_image) in skipped["img/synth_0001.jpg"]["detail"]
    assert str(outside_mask) in skipped["img/synth_0003.jpg"]["detail"]
    assert manifest["skip_counts"] == {"bad_input": {"outside_root": 2}, "rule": {}}
    assert "options" not in manifest  # follow_links recorded only when set
    # named in the report: the link and where it leads
    assert f"img/synth_0001.jpg -> {outside_image}" in report
    assert f"gt/synth_0003.png -> {outside_mask}" in report
    assert "outside_root" in report
    # the outside files are neither read into a shard nor hashed nor counted
    data = _shard_bytes(tmp_path / "out")
    assert outside_image.read_bytes() not in data and outside_mask.read_bytes() not in data
    digests = set(manifest["source"]["sha256"].values())
    assert _sha(outside_image.read_bytes()) not in digests and _sha(outside_mask.read_bytes()) not in digests
    assert not any(k.startswith("..") for k in manifest["source"]["sha256"])
    # the link inside the root is read like a file
    samples = {s.source: s for s in shards.open_dataset(tmp_path / "out")}
    assert sorted(samples) == ["img/synth_0000.jpg", "img/synth_0002.jpg", "img/synth_0004.jpg"]


def test_follow_links_reads_them(linked_davis, tmp_path) -> None:
    root, outside_image, _ = linked_davis
    manifest = _convert(davis_converter(root, follow_links=True), tmp_path / "out")
    assert manifest["skipped"] == [] and manifest["totals"]["images"] == 5
    assert manifest["options"] == {"follow_links": True}
    assert _sha(outside_image.read_bytes()) in manifest["source"]["sha256"].values()


def test_cli_follow_links(linked_davis, tmp_path) -> None:
    root = linked_davis[0]
    argv = ["davis", "--root", str(root), "--workers", "0", "--max-skip-fraction", "0.1"]
    assert main(argv + ["--out", str(tmp_path / "refused")]) == 1  # 2 of 5 refused
    assert shards.read_manifest(tmp_path / "refused")["skip_counts"]["bad_input"] == {"outside_root": 2}
    assert main(argv + ["--out", str(tmp_path / "followed"), "--follow-links"]) == 0
    manifest = shards.read_manifest(tmp_path / "followed")
    assert manifest["totals"]["images"] == 5 and manifest["options"]["follow_links"] is True


def test_rerun_after_a_link_is_fixed_redoes_the_shard(linked_davis, tmp_path) -> None:
    root, outside_image, outside_mask = linked_davis
    _convert(davis_converter(root), tmp_path / "out")
    links = ((root / "img" / "synth_0001.jpg", outside_image), (root / "gt" / "synth_0003.png", outside_mask))
    for link, target in links:
        link.unlink()
        shutil.copy(target, link)
    manifest = _convert(davis_converter(root), tmp_path / "out")
    assert manifest["skipped"] == [] and manifest["totals"]["images"] == 5


def test_hqseg_link_out_of_the_root(tmp_path) -> None:
    root = tmp_path / "hq"
    written = write_hqseg44k(root, 1, split="val", size=32)
    image = root / "DIS5K/DIS-VD/im" / f"{written['DIS5K-VD'][0]}.jpg"
    target = _move_out(image, tmp_path / "elsewhere")
    manifest = _convert(HQSeg44kConverter(root=root, split="val"), tmp_path / "out")
    skipped = [(e["item"], e["reason"]) for e in manifest["skipped"]]
    assert skipped == [(f"DIS5K/DIS-VD/im/{image.name}", "outside_root")]
    assert target.read_bytes() not in _shard_bytes(tmp_path / "out")
    assert _sha(target.read_bytes()) not in manifest["source"]["sha256"].values()
    assert manifest["options"] == {"subsets": list(written)}


def test_cocolvis_links_out_of_the_root(tmp_path) -> None:
    root = tmp_path / "coco"
    write_cocolvis(root, 4, size=40, seed=1)
    split = root / "train"
    image = _move_out(split / "images" / "000000000001.jpg", tmp_path / "elsewhere")
    masks = _move_out(split / "masks" / "000000000002.pickle", tmp_path / "elsewhere")
    manifest = _convert(CocoLvisConverter(root), tmp_path / "out")
    skipped = {e["item"]: (e["reason"], e["detail"]) for e in manifest["skipped"]}
    assert sorted(skipped) == ["train/images/000000000001.jpg", "train/images/000000000002.jpg"]
    assert {r for r, _ in skipped.values()} == {"outside_root"}
    assert str(masks) in skipped["train/images/000000000002.jpg"][1]
    assert image.read_bytes() not in _shard_bytes(tmp_path / "out")
    assert manifest["totals"]["images"] == 2
    # the index itself may not lead out of the root either
    _move_out(split / "hannotation.pickle", tmp_path / "index")
    with pytest.raises(ConversionError, match="outside"):
        _convert(CocoLvisConverter(root), tmp_path / "out2")
    assert _convert(CocoLvisConverter(root, follow_links=True), tmp_path / "out3")["totals"]["images"] == 4


def test_cocolvis_build_link_out_of_the_folders(tmp_path) -> None:
    paths = write_lvis_panoptic(tmp_path / "src", _scenes(3))
    target = _move_out(paths["images"] / "000000000002.jpg", tmp_path / "elsewhere")
    conv = dict(lvis_json=paths["lvis"], panoptic_json=paths["panoptic_json"], panoptic_dir=paths["panoptic_dir"],
                images=paths["images"])
    manifest = _convert(CocoLvisBuildConverter(**conv), tmp_path / "out")
    assert [(Path(e["item"]).name, e["reason"]) for e in manifest["skipped"]] == [("000000000002.jpg", "outside_root")]
    assert target.read_bytes() not in _shard_bytes(tmp_path / "out")
    assert _convert(CocoLvisBuildConverter(**conv, follow_links=True), tmp_path / "out2")["totals"]["images"] == 3


# --- skips by kind -------------------------------------------------------------------------


def _square(k: int) -> list[list[float]]:
    r0 = 4 + 3 * k
    return [[4.0, float(r0), 30.0, float(r0), 30.0, float(r0 + 20), 4.0, float(r0 + 20)]]


def _scenes(n_good: int, no_objects: bool = False) -> list[LvisPanopticImage]:
    scenes = [LvisPanopticImage(f"{k + 1:012d}", 48, 48, [_square(k)]) for k in range(n_good)]
    if no_objects:  # an LVIS object below the area threshold: nothing left after the rules
        scenes.append(LvisPanopticImage(f"{n_good + 1:012d}", 48, 48, [[[0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 0.0, 3.0]]]))
    return scenes


def _build_argv(paths: dict[str, Path], out: Path) -> list[str]:
    return ["cocolvis-build", "--lvis", str(paths["lvis"]), "--panoptic-json", str(paths["panoptic_json"]),
            "--panoptic-dir", str(paths["panoptic_dir"]), "--images", str(paths["images"]), "--out", str(out),
            "--workers", "0", "--max-skip-fraction", "0.1"]


def test_rule_outcomes_do_not_count_toward_the_skip_fraction(tmp_path, capsys) -> None:
    paths = write_lvis_panoptic(tmp_path / "src", _scenes(6, no_objects=True))
    assert main(_build_argv(paths, tmp_path / "out")) == 0  # 1 of 7 has no object: a rule outcome
    report = capsys.readouterr().out
    manifest = shards.read_manifest(tmp_path / "out")
    assert [(Path(e["item"]).stem, e["reason"], e["kind"]) for e in manifest["skipped"]] == [
        ("000000000007", "no_objects", "rule")]
    assert manifest["skip_counts"] == {"bad_input": {}, "rule": {"no_objects": 1}}
    assert manifest["totals"]["images"] == 6 and manifest["totals"]["skipped"] == 1
    assert manifest["build"]["rules"]["skipped_no_objects"] == 1
    assert "0 bad input" in report and "1 by the dataset's rules" in report


def test_bad_input_still_counts_toward_the_skip_fraction(tmp_path, capsys) -> None:
    paths = write_lvis_panoptic(tmp_path / "src", _scenes(6, no_objects=True))
    (paths["images"] / "000000000003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 10)
    assert main(_build_argv(paths, tmp_path / "out")) == 1  # 1 bad input of 7: 14.3% > 10%
    err = capsys.readouterr().err
    assert "1 of 7" in err and "bad input" in err
    manifest = shards.read_manifest(tmp_path / "out")
    assert manifest["skip_counts"] == {"bad_input": {"corrupt_image": 1}, "rule": {"no_objects": 1}}
    kinds = {Path(e["item"]).stem: e["kind"] for e in manifest["skipped"]}
    assert kinds == {"000000000003": "bad_input", "000000000007": "rule"}


def test_skip_kind_of_a_converter_skip() -> None:
    assert SkipItem("corrupt_image").kind == "bad_input"
    assert SkipItem("no_objects", kind="rule").kind == "rule"
    with pytest.raises(ValueError):
        SkipItem("x", kind="other")
