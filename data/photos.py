"""Test photographs from scikit-image, shared by the bundled sample clips and the tiny models.

``photo(name, size)`` is the single source of truth for the image geometry: the photo is
centre-cropped to a square (the largest one that fits) and resized to ``size x size`` with
``cv2.INTER_AREA``.  The sample clips in ``data/samples`` are 64x64 windows of ``photo(name, 80)``
(see ``data/make_samples.py``), so loading them at 32x32 gives windows of the 40x40 photo that the
tiny models are trained on, moving 1 px per frame.
"""

from __future__ import annotations

import numpy as np

#: photo name (a ``skimage.data`` function) -> default caption
PHOTOS: dict[str, str] = {
    "astronaut": "a photo of an astronaut",
    "chelsea": "a photo of a cat",
    "coffee": "a photo of a cup of coffee",
    "rocket": "a photo of a rocket",
    "camera": "a photo of a cameraman",
    "hubble_deep_field": "a photo of galaxies",
    "immunohistochemistry": "a photo of stained tissue",
    "retina": "a photo of a retina",
}

_CACHE: dict[str, np.ndarray] = {}


def _load(name: str) -> np.ndarray:
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(PHOTOS)} (data/photos.py PHOTOS)")
    if name not in _CACHE:
        import skimage.data

        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:  # grayscale -> RGB
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3]
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        _CACHE[name] = np.ascontiguousarray(image)
    return _CACHE[name]


def center_square(image: np.ndarray) -> np.ndarray:
    """Largest centred square crop of an ``(H, W, C)`` image."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top : top + s, left : left + s]


def photo(name: str, size: int) -> np.ndarray:
    """The photo ``name`` (a key of ``PHOTOS``) as a uint8 RGB array of shape ``(size, size, 3)``.

    Centre-cropped to a square, then resized with ``cv2.INTER_AREA`` (``INTER_CUBIC`` if enlarging).
    """
    import cv2

    if int(size) < 1:
        raise ValueError(f"photo size must be >= 1, got {size}")
    square = center_square(_load(name))
    size = int(size)
    if square.shape[0] == size:
        return square.copy()
    interp = cv2.INTER_AREA if size < square.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp)


def caption(name: str) -> str:
    """Default caption of a photo, e.g. ``caption("chelsea") == "a photo of a cat"``."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(PHOTOS)} (data/photos.py PHOTOS)")
    return PHOTOS[name]
