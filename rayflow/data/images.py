"""Decoded pictures of any size and mode -> one uint8 (N, C, H, W) array of a single shape.

A user's folder mixes sizes (phone photos, crops, thumbnails) and modes (RGB, RGBA, grayscale,
palette). The networks need one channel count and one size, so every picture is converted to the
set's mode and, when `data.image_size` is given, resized with interpolation (not centre-cropped
at full resolution, which would keep a 32-px patch of a 224-px photo).
"""

from __future__ import annotations

import logging

import numpy as np

from rayflow.data.imageset import DataError

log = logging.getLogger("rayflow")

_GRAY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"}
_ALPHA = {"RGBA", "LA", "PA", "La", "RGBa"}


def header(src, where: str) -> tuple[str, tuple[int, int], bool]:
    """(mode, size, has alpha) from the file's header; the file is closed again (a folder of 10k
    pictures must not hold 10k open files)."""
    from PIL import Image

    try:
        with Image.open(src) as im:
            return im.mode, im.size, has_alpha(im)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise DataError(f"cannot read image {where}: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    """PIL names the source in its 'cannot identify' error, which for bytes read from an object store
    is an object's repr: the caller names the file, so say what is wrong instead."""
    from PIL import UnidentifiedImageError

    return "not an image file PIL can identify" if isinstance(e, UnidentifiedImageError) else str(e)


def decoded(src, where: str, mode: str, size: int | None) -> np.ndarray:
    """One picture in `mode`, fitted to `size`: `load()` decodes it all, so a truncated or corrupt
    file ends in one DataError naming it, before any compute. A camera's EXIF orientation is applied
    (a phone photo taken upright stays upright)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            im.load()
            im = ImageOps.exif_transpose(im).convert(mode)
    except Exception as e:
        raise DataError(f"cannot read image {where}: {_reason(e)}") from None
    return np.asarray(fit(im, size) if size else im)


def to_chw(picture: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W), as `_nchw` lays out a whole set."""
    return picture[None] if picture.ndim == 2 else picture.transpose(2, 0, 1)


def has_alpha(im) -> bool:
    return im.mode in _ALPHA or (im.mode == "P" and "transparency" in im.info)


def set_mode(modes: list[str]) -> str:
    """'RGB' when any picture is in a colour mode, else 'L'. Decided by the file's mode, not by its
    pixels: an RGB file of grey pixels still makes the set RGB (predictable, and cheap)."""
    return "L" if all(m in _GRAY for m in modes) else "RGB"


def fit(im, size: int):
    """Resize the shorter side to `size` (bilinear, antialiased when shrinking), then centre-crop the
    longer one. Why not a plain resize to size x size: that would stretch non-square pictures and
    change the shapes the networks learn; the crop only loses the borders of the longer side."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def stack(sources: list, names: list[str], size: int | None, where: str) -> np.ndarray:
    """Pictures (paths or file-likes) -> uint8 (N, C, size, size) in the set's mode; alpha dropped
    with one warning. Without `size` they must share one size, else one DataError asking for
    data.image_size. Two passes: headers first (mode, sizes), then one picture decoded at a time."""
    mode = check_headers([header(s, n) for s, n in zip(sources, names)], names, size, where)
    for s in sources:
        if hasattr(s, "seek"):
            s.seek(0)
    return _nchw([decoded(s, n, mode, size) for s, n in zip(sources, names)])


def check_headers(heads: list[tuple[str, tuple[int, int], bool]], names: list[str], size: int | None,
                  where: str) -> str:
    """The set's mode from every picture's (mode, size, alpha); warns once about alpha and, without
    `size`, refuses mixed sizes. Shared by `stack` and the cached folder reader (data/folder.py), so
    both decide alike."""
    alpha = [n for (_, _, a), n in zip(heads, names) if a]
    if alpha:
        warn_alpha(where, len(alpha), alpha[0])
    first: dict[tuple[int, int], str] = {}
    for h, n in zip(heads, names):
        first.setdefault(h[1], n)
    if size is None and len(first) > 1:
        (s0, n0), (s1, n1) = [(s, _under(n, where)) for s, n in list(first.items())[:2]]
        raise DataError(f"{where}: images differ in size ({len(first)} sizes, e.g. {n0} is {s0[0]}x{s0[1]} and "
                        f"{n1} is {s1[0]}x{s1[1]}); set data.image_size (e.g. data.image_size=32) to resize them "
                        f"all to one size")
    return set_mode([h[0] for h in heads])


def _under(name: str, where: str) -> str:
    """A picture's name relative to its folder `where` (the message names the folder once)."""
    prefix = where.rstrip("/") + "/"
    return name[len(prefix):] if name.startswith(prefix) else name


def warn_alpha(where: str, n: int, example: str) -> None:
    log.warning("%s: %d image(s) have an alpha channel (e.g. %s); it is dropped (transparent pixels keep "
                "their colour)", where, n, example)


def resize_array(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, C, H, W) -> (N, C, size, size) with `fit` (user arrays whose size differs)."""
    from PIL import Image

    if x.shape[2:] == (size, size):
        return x
    if not len(x):
        return np.zeros((0, x.shape[1], size, size), np.uint8)
    return _nchw([np.asarray(fit(Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)), size))
                  for a in x])


def _nchw(pictures: list[np.ndarray]) -> np.ndarray:
    """(H, W) or (H, W, C) pictures of one shape -> contiguous uint8 (N, C, H, W)."""
    x = np.stack(pictures)
    return np.ascontiguousarray(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
