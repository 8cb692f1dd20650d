"""The Flask app of the click demo: the page in ``static/`` and a JSON API over a
:class:`~clickseg.app.session.Session`. Local use: one session for the server, requests taken
one at a time under a lock. A :class:`DemoError` becomes a 400 answer ``{"error": message}``
that the page shows; any other failure a 500 with the error, and the server keeps running."""
from __future__ import annotations

import argparse
import threading
from pathlib import Path

from flask import Flask, jsonify, request, send_from_directory

from clickseg.app.session import Catalog, DemoError, Session

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_MB = 64


def create_app(session: Session) -> Flask:
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_MB << 20
    lock = threading.Lock()

    def answer(action, with_image: bool = False):
        with lock:
            try:
                action()
            except DemoError as e:
                return jsonify(error=str(e), **session.state()), 400
            return jsonify(session.state(with_image))

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise DemoError("the request has no JSON object body")
        return data

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"the upload is larger than {MAX_UPLOAD_MB} MB"), 413

    @app.errorhandler(Exception)
    def failed(e):
        code = getattr(e, "code", 500)
        return jsonify(error=f"{type(e).__name__}: {e}"), code if isinstance(code, int) else 500

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/choices")
    def choices():
        return jsonify([{"id": c.id, "label": c.label} for c in session.catalog.choices])

    @app.get("/api/state")
    def state():
        return answer(lambda: None, with_image=True)

    @app.post("/api/select")
    def select():
        return answer(lambda: session.choose(str(body().get("id", ""))), with_image=True)

    @app.post("/api/upload")
    def upload():
        def run():
            f = request.files.get("file")
            if f is None:
                raise DemoError("no file in the upload")
            session.upload(f.read(), f.filename or "upload")
        return answer(run, with_image=True)

    @app.post("/api/click")
    def click():
        def run():
            data = body()
            session.click(data.get("x"), data.get("y"), bool(data.get("positive", True)))
        return answer(run)

    @app.post("/api/undo")
    def undo():
        return answer(session.undo)

    @app.post("/api/reset")
    def reset():
        return answer(session.reset)

    @app.post("/api/checkpoint")
    def checkpoint():
        return answer(lambda: session.load_checkpoint(str(body().get("path", ""))), with_image=True)

    return app


def parse_datasets(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise DemoError(f"--dataset {spec!r}: expected NAME=SHARD_DIR")
        out[name] = path
    return out


def serve(args: argparse.Namespace) -> int:
    """``launch.py demo``: load the checkpoint and the choices, then serve until Ctrl-C."""
    import sys

    try:
        catalog = Catalog(args.images, parse_datasets(args.dataset))
        session = Session(args.checkpoint, args.device, catalog)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not catalog.choices:
        print("no --images or --dataset given: upload images in the page")
    print(f"clickseg demo: {args.checkpoint} on {args.device}, {len(catalog.choices)} image(s)/instance(s) "
          f"to choose from; open http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    create_app(session).run(host=args.host, port=args.port, threaded=True)
    return 0
