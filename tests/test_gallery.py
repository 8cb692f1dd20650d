"""The evaluation gallery: pages written by ``launch.py report --gallery`` and ``launch.py eval --gallery``,
opened from disk in a real headless Chromium; tiles counted, named and checked against the
stored results (the recomputed IoU@1 of every shown instance equals the stored one)."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import chromium_session
from clickseg.rundir import read_results
from trained_run import make_run

K = 3


def copy_with_empty_objects(src: Path, dst: Path, samples: tuple[int, ...] = (1, 4)) -> list[str]:
    """Copy a shard directory, emptying every object of the given samples (indices in the first
    shard); return the emptied instances' names (``source#id``)."""
    dst.mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    emptied = []
    for s, shard in enumerate(manifest["shards"]):
        with tarfile.open(src / shard["name"]) as tin, tarfile.open(dst / shard["name"], "w") as tout:
            keys: list[str] = []
            metas: dict[str, dict] = {}
            for member in tin.getmembers():
                data = tin.extractfile(member).read()
                key = member.name.split(".", 1)[0]
                if key not in keys:
                    keys.append(key)
                if member.name.endswith(".meta.json"):
                    metas[key] = json.loads(data)
                if s == 0 and keys.index(key) in samples and member.name.endswith(".layers.npz"):
                    layers = np.load(io.BytesIO(data))["layers"]
                    buf = io.BytesIO()
                    np.savez_compressed(buf, layers=np.zeros_like(layers))
                    data = buf.getvalue()
                    member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
            if s == 0:
                for i in samples:
                    meta = metas[keys[i]]
                    emptied += [f"{meta['source']}#{o['id']}" for o in meta["objects"] if not o["is_stuff"]]
        shard["bytes"] = (dst / shard["name"]).stat().st_size
        shard["sha256"] = hashlib.sha256((dst / shard["name"]).read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return emptied


@pytest.fixture(scope="module")
def gallery(demo_run, builtin_dirs, tmp_path_factory, repo_root):
    """The report (with gallery, k = 3, baseline demo-other) of demo-run, demo-other and a run on a
    copy of the set with two empty objects evaluated with the center and the random protocol."""
    from clickseg.eval.evaluate import evaluate_run

    root = tmp_path_factory.mktemp("gallery")
    emptied = copy_with_empty_objects(Path(builtin_dirs["davis"]), root / "davis-empty")
    run_e = make_run(builtin_dirs, root / "with-empty", [8], **{"data.eval": "{davis-empty: %s}" % (root / "davis-empty")})
    evaluate_run(run_e, overrides=["eval.protocol=random", "eval.draws=3"])
    sys.path.insert(0, repo_root)
    from launch import main

    out = root / "report"
    assert main(["report", str(demo_run["run"]), str(demo_run["other"]), str(run_e), "--baseline", "demo-other",
                 "--gallery", "--gallery-k", str(K), "--out", str(out)]) == 0
    return {"out": out / "gallery", "emptied": emptied, "run_e": run_e, **demo_run}


@pytest.fixture(scope="module")
def driver():
    yield from chromium_session(1100, 900)


def _row(run_dir, protocol, epoch=None):
    rows = [r for r in read_results(run_dir) if r["protocol"] == protocol and (epoch is None or r["epoch"] == epoch)]
    return rows[-1]


def _first(row) -> dict[str, float]:
    return {n: v[0] for n, v in zip(row["instance_names"], row["ious"])}


def _names(driver, selector):
    return [t.get_attribute("data-name") for t in driver.find_elements("css selector", selector)]


def _screenshot(driver, path: Path) -> None:
    """A screenshot that is a valid PNG of the viewport's size."""
    driver.save_screenshot(str(path))
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == tuple(driver.execute_script("return [window.innerWidth, window.innerHeight];"))


def test_worst_instances_clicks_of_every_draw_and_skipped_empty_masks(gallery, driver, tmp_path):
    page = gallery["out"] / "with-empty" / "davis-empty.html"
    driver.get(page.as_uri())
    assert driver.title == "with-empty / davis-empty"
    sections = [s.get_attribute("data-protocol") for s in driver.find_elements("css selector", "section")]
    assert sections == ["center", "random-c3"]
    for protocol, figures in (("center", 2), ("random-c3", 1 + 3)):
        row = _row(gallery["run_e"], protocol)
        first = _first(row)
        expected = sorted(first, key=lambda n: (first[n], n))[:K]
        tiles = driver.find_elements("css selector", f'section[data-protocol="{protocol}"] .worst .tile')
        assert len(tiles) == K
        assert [t.get_attribute("data-name") for t in tiles] == expected
        assert [float(t.get_attribute("data-iou")) for t in tiles] == [first[n] for n in expected]
        for t in tiles:
            imgs = t.find_elements("css selector", "img")
            assert len(imgs) == figures
            # every image loaded from disk, next to the page
            assert all(driver.execute_script("return arguments[0].naturalWidth", i) == 160 for i in imgs)
        skipped = driver.find_elements("css selector", f'section[data-protocol="{protocol}"] .skipped li')
        assert row["skipped_empty"] == 2 and [s.text for s in skipped] == gallery["emptied"]
    # the recomputed IoU@1 of every tile equals the stored one (same clicks, same seeds)
    assert driver.find_elements("css selector", ".warn") == []
    assert driver.find_elements("css selector", ".gains, .losses") == []  # no baseline on this dataset
    _screenshot(driver, tmp_path / "page.png")


def test_gains_and_losses_against_the_baseline(gallery, driver, tmp_path):
    mine, base = _first(_row(gallery["run"], "center", 2)), _first(_row(gallery["other"], "center", 2))
    deltas = {n: mine[n] - base[n] for n in mine}
    gains = sorted((n for n in deltas if deltas[n] > 0), key=lambda n: (-deltas[n], n))[:K]
    losses = sorted((n for n in deltas if deltas[n] < 0), key=lambda n: (deltas[n], n))[:K]
    assert gains and losses, "the baseline pair should have both gains and losses"
    driver.get((gallery["out"] / "demo-run" / "davis.html").as_uri())
    assert _names(driver, ".gains .tile") == gains
    assert _names(driver, ".losses .tile") == losses
    assert [float(t.get_attribute("data-delta")) for t in driver.find_elements("css selector", ".gains .tile")] == \
        [deltas[n] for n in gains]
    for t in driver.find_elements("css selector", ".gains .tile, .losses .tile"):
        assert len(t.find_elements("css selector", "img")) == 3  # ground truth, this model, the baseline
    assert len(driver.find_elements("css selector", ".worst .tile")) == K
    assert driver.find_elements("css selector", ".warn") == []
    _screenshot(driver, tmp_path / "page.png")
    # the baseline's own page has no comparison; the index links every page
    driver.get((gallery["out"] / "demo-other" / "davis.html").as_uri())
    assert driver.find_elements("css selector", ".gains, .losses") == []
    driver.get((gallery["out"] / "index.html").as_uri())
    links = sorted(a.get_attribute("href").rsplit("/gallery/", 1)[1] for a in driver.find_elements("css selector", "a"))
    assert links == ["demo-other/davis.html", "demo-run/davis.html", "with-empty/davis-empty.html"]


def test_eval_checkpoint_with_gallery(demo_run, builtin_dirs, tmp_path, repo_root, capsys):
    sys.path.insert(0, repo_root)
    from launch import main

    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(demo_run["checkpoint"]), "--dataset", f"davis={builtin_dirs['davis']}",
                 "--out", str(out), "--gallery", "--gallery-k", "2", "eval.n_clicks=2"]) == 0
    page = out / "gallery" / "epoch_0002" / "davis.html"
    text = page.read_text()
    assert len(re.findall(r'<div class="tile"', text)) == 2 and 'class="warn"' not in text
    assert len(list((out / "gallery" / "epoch_0002" / "davis_files").glob("*.jpg"))) == 4
    assert f"gallery: 1 page(s), {out / 'gallery' / 'index.html'}" in capsys.readouterr().out


def test_a_missing_checkpoint_is_named_and_other_pages_are_written(demo_run, tmp_path, repo_root, capsys):
    from clickseg.gallery import write_galleries

    run = tmp_path / "copy"
    shutil.copytree(demo_run["run"], run)
    (run / "checkpoints" / "epoch_0002.pt").unlink()
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    (run / "results.jsonl").write_text("".join(json.dumps({**r, "checkpoint": str(run / "gone.pt")}) + "\n"
                                               for r in rows))
    pages, errors = write_galleries(tmp_path / "out", [run, demo_run["other"]], k=1)
    assert [p.parent.name for p in pages] == ["demo-other"]
    assert len(errors) == 1 and errors[0].startswith("gallery of demo-run on davis: checkpoint of demo-run epoch 2 "
                                                     "not found")
    # report --gallery: the report is written, the page that could not be made is named, exit 1
    sys.path.insert(0, repo_root)
    from launch import main

    capsys.readouterr()
    assert main(["report", str(run), str(demo_run["other"]), "--gallery", "--out", str(tmp_path / "report")]) == 1
    assert (tmp_path / "report" / "report.md").exists()
    assert "not written: gallery of demo-run on davis: checkpoint of demo-run epoch 2 not found" in capsys.readouterr().err
