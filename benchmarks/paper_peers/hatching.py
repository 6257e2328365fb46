"""Peer: ``hatched`` (pip), 3 threshold levels, 45 degree hatching, pitch in pen widths.

hatched 0.2 builds its empty ``MultiLineString``s from ``np.empty((0, 2, 2))``, which shapely
refuses under numpy >= 2 ("truth value of an empty array is ambiguous"); :func:`_patched`
swaps the module's ``MultiLineString`` for one that maps an empty array to an empty geometry,
for the duration of a call (site-packages stays untouched). On some dark photos some pitches
crash inside shapely ('Point' object is not iterable); hatched prints the error and returns
nothing, which :func:`draw` turns into :class:`HatchedFailed`, so that pitch is skipped.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator

import cv2
import numpy as np

from .paper_test import NIB_MM, Drawing, Photo, clip_to_box, order_for_plotting

PITCHES_NIB = (1.2, 1.6, 2.2)  # hatch pitch in pen widths: the three settings
LEVELS = (64, 128, 192)
WORK_PX_PER_MM = 5.0  # hatched works in pixels: the photo at 0.2 mm per pixel
BLUR_MM = 1.0  # hatched's box blur (its default 10 px of a ~500 px photo is ~2-3 mm)


class HatchedFailed(RuntimeError):
    pass


@contextlib.contextmanager
def _patched() -> Iterator[object]:
    import hatched.hatched as hh
    from shapely.geometry import MultiLineString, Polygon

    def multi_line_string(lines=None):
        if isinstance(lines, np.ndarray) and lines.size == 0:
            return MultiLineString()
        return MultiLineString(lines)

    build_mask = hh._build_mask

    def mask(contours):
        # hatched pads the image with a black border, so a level has no contour only when
        # no pixel is lighter than it: nothing is masked, the whole picture gets that level's
        # hatching (hatched 0.2 returns None there and crashes on None.intersection)
        m = build_mask(contours)
        return Polygon() if m is None else m

    saved = hh.MultiLineString, hh._build_mask
    hh.MultiLineString, hh._build_mask = multi_line_string, mask
    try:
        yield hh
    finally:
        hh.MultiLineString, hh._build_mask = saved


def available() -> str | None:
    try:
        import hatched.hatched  # noqa: F401
    except ImportError as e:
        return f"hatched is not installed ({e}); pip install -e '.[bench]'"
    return None


def settings(quick: bool) -> list[float]:
    return list(PITCHES_NIB[1:2] if quick else PITCHES_NIB)


def draw(photo: Photo, pitch_nib: float) -> Drawing:
    """hatched's public ``hatch()`` on the grey photo, scaled to 0.2 mm per pixel."""
    h_px, w_px = photo.grey.shape
    image_scale = WORK_PX_PER_MM * photo.box.width_mm / w_px
    w_work, h_work = int(w_px * image_scale), int(h_px * image_scale)  # as hatched rounds
    printed = io.StringIO()
    t0 = time.perf_counter()
    with _patched() as hh, contextlib.redirect_stdout(printed):
        try:
            mls = hh.hatch(str(photo.path), hatch_pitch=pitch_nib * NIB_MM * WORK_PX_PER_MM,
                           levels=LEVELS, blur_radius=max(1, round(BLUR_MM * WORK_PX_PER_MM)),
                           image_scale=image_scale, interpolation=cv2.INTER_AREA,
                           hatch_angle=45, show_plot=False, save_svg=False)
        except Exception as e:  # its shapely crash can also escape the try inside hatched
            raise HatchedFailed(f"{type(e).__name__}: {e}") from e
    elapsed = time.perf_counter() - t0
    if "Error" in printed.getvalue():
        raise HatchedFailed(printed.getvalue().strip())
    scale = np.array([photo.box.width_mm / w_work, photo.box.height_mm / h_work])
    lines = [np.asarray(g.coords) * scale for g in mls.geoms if len(g.coords) > 1]
    lines = order_for_plotting(clip_to_box(lines, photo.box))
    return Drawing(lines, f"pitch {pitch_nib:g} nib", elapsed)
