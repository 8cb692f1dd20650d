"""The interactive click demo: a local web app (``launch.py demo``) around ``Predictor``.

``session`` holds the model, the chosen image and its clicks (no web code); ``server`` is the
Flask app that serves the page in ``static/`` and a small JSON API to it.
"""
