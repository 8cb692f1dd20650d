"""Record how an OpenCV version fills polygons (run under that version; needs only numpy + cv2).

    python tests/data/record_fillpoly.py tests/data/fillpoly_opencv47.npz

made ``fillpoly_opencv47.npz`` with opencv-python-headless 4.7.0.72 (numpy 1.26): 200 seeded
star-shaped polygons (3 to 8 points, steep and thin ones included, sub-pixel coordinates, all
inside a 128 x 128 canvas), rounded half to even and filled one at a time with value 1, as
LVIS polygons are in RITM's conversion. OpenCV 4.11 and 5.0 give the same masks; 4.9 differs
on 73 of the 200.
"""
import sys

import cv2
import numpy as np


def polygons(n: int = 200, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(3, 9))
        cx, cy = rng.uniform(40, 88, 2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(5, 25, k)
        xs = cx + np.cos(angles) * radii * (0.15 + 0.3 * (i % 3))
        ys = cy + np.sin(angles) * radii
        out.append(np.stack([xs, ys], 1).ravel().round(2))
    return out


if __name__ == "__main__":
    polys = polygons()
    masks = []
    for p in polys:
        canvas = np.zeros((128, 128), np.int32)
        cv2.fillPoly(canvas, np.round(p.reshape(-1, 2)).astype(np.int32)[None], 1)
        masks.append(canvas == 1)
    np.savez_compressed(sys.argv[1], coords=np.concatenate(polys), lengths=np.array([len(p) for p in polys]),
                        masks=np.packbits(np.stack(masks), axis=-1), opencv=cv2.__version__)
