"""The simulated camera: seeded, in perspective, unevenly lit, noisy, JPEG."""

from __future__ import annotations

import cv2
import numpy as np

from plotterd.light import np_srgb_to_linear
from plotterd.machine.sim.camera import CameraSettings, photograph

SMALL = CameraSettings(size_px=(800, 600))


def _page() -> np.ndarray:
    page = np.ones((300, 200), np.float32)  # 20 x 30 mm at 10 px/mm
    page[100:200, 50:150] = 0.1
    return page


def test_seeded_and_not_kind() -> None:
    a = photograph(_page(), 10.0, SMALL, seed=3)
    b = photograph(_page(), 10.0, SMALL, seed=3)
    c = photograph(_page(), 10.0, SMALL, seed=4)
    assert a.jpeg == b.jpeg and a.jpeg != c.jpeg
    assert a.image.shape == (600, 800, 3) and a.jpeg[:2] == b"\xff\xd8"
    # perspective, not just a rotation: the homography's last row is not (0, 0, 1)
    h = a.page_to_photo / a.page_to_photo[2, 2]
    assert np.abs(h[2, :2]).max() > 1e-5 or np.abs(c.page_to_photo[2, :2]).max() > 1e-5


def test_the_paper_lands_where_the_homography_says_on_a_background() -> None:
    shot = photograph(_page(), 10.0, SMALL, seed=5)
    linear = np_srgb_to_linear(shot.image.astype(np.float32) / 255.0).mean(axis=2)
    centre = cv2.perspectiveTransform(np.array([[[10.0, 15.0]]]), shot.page_to_photo)[0, 0]
    paper = cv2.perspectiveTransform(np.array([[[10.0, 4.0]]]), shot.page_to_photo)[0, 0]
    ink = linear[int(centre[1]), int(centre[0])]
    white = linear[int(paper[1]), int(paper[0])]
    assert ink < 0.3 * white
    corners = cv2.perspectiveTransform(np.array([[[0.0, 0], [20, 0], [20, 30], [0, 30]]]),
                                       shot.page_to_photo)[0]
    assert (corners >= 0).all() and (corners[:, 0] < 800).all() and (corners[:, 1] < 600).all()
    assert linear[2, 2] < 0.5 * white  # the frame's corner is the table, not paper


def test_light_is_uneven_and_noise_is_there() -> None:
    flat = np.ones((300, 300), np.float32)
    shot = photograph(flat, 10.0, CameraSettings(size_px=(800, 600), fill=(0.9, 0.9),
                                                 max_tilt_deg=0.0, max_roll_deg=0.0), seed=1)
    linear = np_srgb_to_linear(shot.image.astype(np.float32) / 255.0).mean(axis=2)
    h = shot.page_to_photo
    levels = []
    for x, y in ((3, 3), (27, 3), (3, 27), (27, 27), (15, 15)):
        u, v = cv2.perspectiveTransform(np.array([[[x, y]]], np.float64), h)[0, 0]
        levels.append(linear[int(v) - 5:int(v) + 5, int(u) - 5:int(u) + 5])
    means = [float(p.mean()) for p in levels]
    assert max(means) / min(means) > 1.15  # gradient + vignette across the paper
    assert min(float(p.std()) for p in levels) > 0.002  # noise survives the JPEG
