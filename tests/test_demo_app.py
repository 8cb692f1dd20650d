"""The click demo in a real headless Chromium: the page shows exactly what ``Predictor`` computes
for the clicks placed with the mouse; undo, reset, bad uploads, bad checkpoints and clicks outside
the image."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import cv2

from browser import chromium_session
from clickseg.eval.metrics import iou
from clickseg.model import load_checkpoint
from clickseg.predictor import Predictor

pytest.importorskip("flask")
pytest.importorskip("selenium")

INSTANCE = "davis:img/synth_0000.jpg#1"
OVERLAY_PIXELS = """const c = document.getElementById('overlay');
const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0; for (let i = 3; i < a.length; i += 4) if (a[i] > 0) n++; return n;"""


@pytest.fixture(scope="module")
def app_url(demo_run, builtin_dirs, tmp_path_factory):
    from werkzeug.serving import make_server

    from clickseg.app.server import create_app
    from clickseg.app.session import Catalog, Session

    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "a.png"), np.full((20, 30, 3), 90, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    (folder / "notes.txt").write_text("not listed")
    catalog = Catalog(folder, {"davis": str(builtin_dirs["davis"])})
    session = Session(demo_run["checkpoint"], "cpu", catalog)
    server = make_server("127.0.0.1", 0, create_app(session), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", session
    server.shutdown()
    thread.join(10)


@pytest.fixture(scope="module")
def driver():
    yield from chromium_session(1200, 1000)


def _wait(driver, cond, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: cond(d))


def _idle(driver):
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.busy === '0'"))


def _text(driver, id_):
    return driver.find_element("id", id_).text


def _click(driver, y, x, positive=True):
    """Press the mouse on image pixel (y, x) of the canvas (left: positive, right: negative)."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = driver.find_element("id", "clicks-layer")
    w, h = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                 canvas)
    width, height = driver.execute_script("const c = document.getElementById('overlay'); return [c.width, c.height];")
    sx, sy = w / width, h / height
    # offsets from the element's centre, to the centre of the pixel
    dx, dy = (x + 0.5) * sx - w / 2, (y + 0.5) * sy - h / 2
    n = len(driver.find_elements("css selector", "#click-list li"))
    chain = ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy))
    (chain.click() if positive else chain.context_click()).perform()
    _wait(driver, lambda d: len(d.find_elements("css selector", "#click-list li")) == n + 1)
    _idle(driver)


def _shown_clicks(driver):
    return [(int(li.get_attribute("data-y")), int(li.get_attribute("data-x")), li.get_attribute("data-positive") == "1")
            for li in driver.find_elements("css selector", "#click-list li")]


def _check_state(driver, prob, gt):
    """The page's IoU (text and full value) and overlay equal those of ``prob``."""
    mask = prob > 0.49
    expected = iou(mask, gt)
    assert _text(driver, "iou") == f"{expected:.4f}"
    assert float(driver.find_element("id", "iou").get_attribute("data-value")) == expected
    assert int(_text(driver, "mask-pixels")) == int(mask.sum())
    assert driver.execute_script(OVERLAY_PIXELS) == int(mask.sum())


def _instance(builtin_dirs):
    import shards

    for sample in shards.open_dataset(builtin_dirs["davis"]):
        if f"davis:{sample.source}#1" == INSTANCE:
            obj = next(o for o in sample.objects if o.id == 1)
            return sample.image, obj.mask.astype(np.int64)
    raise AssertionError(f"{INSTANCE} not in the built-in set")


def _open(driver, url):
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.version !== undefined"))
    Select(driver.find_element("id", "choice")).select_by_value(INSTANCE)
    _wait(driver, lambda d: _text(d, "label") == INSTANCE)
    _idle(driver)


def test_clicks_undo_reset_show_what_the_predictor_computes(app_url, driver, demo_run, builtin_dirs, tmp_path):
    url, _ = app_url
    image, gt = _instance(builtin_dirs)
    predictor = Predictor(load_checkpoint(demo_run["checkpoint"]))
    predictor.set_image(image)
    _open(driver, url)
    assert _text(driver, "click-count") == "0" and _text(driver, "iou") == "-"
    assert driver.execute_script(OVERLAY_PIXELS) == 0
    # the ground-truth outline is drawn: its pixels are the object's boundary
    gt_pixels = driver.execute_script(OVERLAY_PIXELS.replace("'overlay'", "'gt-layer'"))
    assert 0 < gt_pixels < int(gt.sum())

    # positive click deep inside the object
    padded = np.pad((gt == 1).astype(np.uint8), 1)  # the image border counts as outside
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = map(int, np.unravel_index(np.argmax(depth), gt.shape))
    _click(driver, y, x, positive=True)
    assert _shown_clicks(driver) == [(y, x, True)]
    first = predictor.predict([(y, x, True)])
    assert (first > 0.49).sum() > 0
    _check_state(driver, first, gt)
    assert _text(driver, "click-count") == "1" and _text(driver, "latency").endswith(" ms")

    # negative click on the background
    background = cv2.erode((gt == 0).astype(np.uint8), np.ones((11, 11), np.uint8), borderValue=0)
    by, bx = map(int, np.argwhere(background > 0)[0])
    _click(driver, by, bx, positive=False)
    assert _shown_clicks(driver) == [(y, x, True), (by, bx, False)]
    second = predictor.predict([(y, x, True), (by, bx, False)])
    _check_state(driver, second, gt)

    # undo: back to the state after the first click
    driver.find_element("id", "undo").click()
    _wait(driver, lambda d: _text(d, "click-count") == "1")
    _idle(driver)
    assert _shown_clicks(driver) == [(y, x, True)]
    _check_state(driver, first, gt)

    # reset: no click, no overlay, no IoU
    driver.find_element("id", "reset").click()
    _wait(driver, lambda d: _text(d, "click-count") == "0")
    _idle(driver)
    assert _text(driver, "iou") == "-" and driver.execute_script(OVERLAY_PIXELS) == 0
    assert driver.find_element("id", "error").is_displayed() is False


def test_bad_upload_and_checkpoint_show_an_error_and_clicks_still_work(app_url, driver, demo_run, builtin_dirs,
                                                                       tmp_path):
    url, _ = app_url
    image, gt = _instance(builtin_dirs)
    predictor = Predictor(load_checkpoint(demo_run["checkpoint"]))
    predictor.set_image(image)
    _open(driver, url)

    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image")
    driver.find_element("id", "upload").send_keys(str(bad))
    _wait(driver, lambda d: d.find_element("id", "error").is_displayed())
    assert "'notes.txt' is not an image" in _text(driver, "error")
    assert _text(driver, "label") == INSTANCE  # the chosen image stays

    _click(driver, 40, 50, positive=True)
    assert not driver.find_element("id", "error").is_displayed()
    _check_state(driver, predictor.predict([(40, 50, True)]), gt)

    missing = tmp_path / "missing.pt"
    field = driver.find_element("id", "checkpoint")
    field.clear()
    field.send_keys(str(missing))
    driver.find_element("id", "load-checkpoint").click()
    _wait(driver, lambda d: d.find_element("id", "error").is_displayed())
    assert f"checkpoint {missing} does not exist" in _text(driver, "error")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    field.clear()
    field.send_keys(str(junk))
    driver.find_element("id", "load-checkpoint").click()
    _wait(driver, lambda d: f"checkpoint {junk} does not load" in _text(d, "error"))

    _click(driver, 60, 30, positive=False)  # the previous model still answers, on the same clicks
    _check_state(driver, predictor.predict([(40, 50, True), (60, 30, False)]), gt)


def test_a_real_upload_replaces_the_image(app_url, driver, tmp_path):
    url, _ = app_url
    driver.get(url + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.version !== undefined"))
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[5:20, 10:40] = (200, 30, 30)
    path = tmp_path / "red box.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    driver.find_element("id", "upload").send_keys(str(path))
    _wait(driver, lambda d: _text(d, "label") == "red box.png")
    _idle(driver)
    assert driver.execute_script("const c = document.getElementById('overlay'); return [c.width, c.height];") == [50, 30]
    _click(driver, 10, 20)
    assert _shown_clicks(driver) == [(10, 20, True)] and _text(driver, "iou") == "-"  # no ground truth


def _post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_clicks_outside_the_image_and_unknown_choices_are_refused(app_url):
    url, session = app_url
    assert _post(url, "/api/select", {"id": INSTANCE})[0] == 200
    n = len(session.clicks)
    status, data = _post(url, "/api/click", {"x": 64 * 100, "y": 3, "positive": True})
    assert status == 400 and data["error"].startswith(f"click at x=6400, y=3 lies outside the {session.image.shape[1]}")
    status, data = _post(url, "/api/click", {"x": "left", "y": 3})
    assert status == 400 and "must be integers" in data["error"]
    status, data = _post(url, "/api/select", {"id": "davis:nothing#9"})
    assert status == 400 and data["error"] == "no image or instance named 'davis:nothing#9'"
    assert len(session.clicks) == n
    assert _post(url, "/api/click", {"x": 3, "y": 3, "positive": True}) [0] == 200


def test_folder_images_are_listed_and_a_broken_one_is_named(app_url):
    url, session = app_url
    with urllib.request.urlopen(url + "/api/choices", timeout=30) as r:
        ids = [c["id"] for c in json.loads(r.read())]
    assert ids[:2] == ["file:a.png", "file:broken.jpg"] and not any("notes" in i for i in ids)
    status, data = _post(url, "/api/select", {"id": "file:a.png"})
    assert status == 200 and (data["width"], data["height"]) == (30, 20) and data["gt"] is None
    status, data = _post(url, "/api/select", {"id": "file:broken.jpg"})
    assert status == 400 and data["error"] == (f"'{session.catalog.files['file:broken.jpg']}' is not an image that "
                                               "can be read (JPEG, PNG, BMP, TIFF or WebP expected)")
    assert data["label"] == "file:a.png"  # the previous image stays


def test_a_checkpoint_that_does_not_load_stops_the_command(tmp_path, capsys, repo_root):
    import sys

    sys.path.insert(0, repo_root)
    from launch import main

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 10)
    assert main(["demo", "--checkpoint", str(bad), "--port", "1"]) == 2
    assert f"error: checkpoint {bad} does not load" in capsys.readouterr().err
    assert main(["demo", "--checkpoint", str(tmp_path / "none.pt"), "--port", "1"]) == 2
    assert f"checkpoint {tmp_path / 'none.pt'} does not exist" in capsys.readouterr().err
