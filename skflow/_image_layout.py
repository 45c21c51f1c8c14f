"""Image layouts: validate images given as ``(n, C, H, W)``, ``(n, H, W)`` or
flat ``(n, C*H*W)`` with ``image_shape``, and give arrays back in the layout
the user passed. Used by the image estimators and TarFlow.
"""

from collections import namedtuple

import numpy as np
from sklearn.utils.validation import check_array

__all__ = ["ImageLayout", "check_images", "check_pixels", "restore_layout"]

#: How the user laid images out: ``ndim`` of the array (4, 3 or 2) and ``(C, H, W)``.
ImageLayout = namedtuple("ImageLayout", ["ndim", "image_shape"])


def _resolve_shape(image_shape):
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"image_shape must be (C, H, W) or (H, W) of positive integers, got {image_shape!r}."
        )
    return shape


def check_images(X, image_shape=None, **check_params):
    """Validate images in any supported layout; return them as ``(n, C, H, W)``.

    Parameters
    ----------
    X : array-like of shape (n, C, H, W), (n, H, W) or (n, C*H*W)
        Images. A flat array needs ``image_shape``.
    image_shape : tuple of int, default=None
        ``(C, H, W)`` (or ``(H, W)`` for one channel). Required for flat
        input; checked against the other layouts.
    **check_params
        Passed to :func:`sklearn.utils.check_array` (e.g. ``ensure_min_samples``).

    Returns
    -------
    images : ndarray of shape (n, C, H, W), float64
    layout : ImageLayout
        Give it to :func:`restore_layout` to return arrays in X's layout.

    Examples
    --------
    >>> import numpy as np
    >>> images, layout = check_images(np.zeros((5, 8, 8)))
    >>> images.shape, layout
    ((5, 1, 8, 8), ImageLayout(ndim=3, image_shape=(1, 8, 8)))
    >>> check_images(np.zeros((5, 64)), image_shape=(8, 8))[0].shape
    (5, 1, 8, 8)
    """
    X = check_array(X, allow_nd=True, dtype=np.float64, **check_params)
    shape = None if image_shape is None else _resolve_shape(image_shape)
    if X.ndim in (3, 4):
        found = (1, *X.shape[1:]) if X.ndim == 3 else X.shape[1:]
        if shape is not None and tuple(found) != shape:
            raise ValueError(f"X has images of shape {tuple(found)}, but image_shape is {shape}.")
        shape = tuple(found)
    elif X.ndim == 2:
        if shape is None:
            raise ValueError("Flat X of shape (n_samples, n_features) needs image_shape=(C, H, W).")
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, but image_shape {shape} has {int(np.prod(shape))} pixels."
            )
    else:
        raise ValueError(f"Expected images with 2, 3 or 4 dimensions, got an array of {X.ndim}.")
    return X.reshape(len(X), *shape), ImageLayout(X.ndim, shape)


def restore_layout(images, layout):
    """Reshape ``(n, C, H, W)`` images to the layout recorded by :func:`check_images`."""
    n = len(images)
    if layout.ndim == 2:
        return images.reshape(n, -1)
    if layout.ndim == 3:
        return images.reshape(n, *layout.image_shape[1:])
    return images.reshape(n, *layout.image_shape)


def check_pixels(X, n_bins):
    """Raise a ValueError unless every value of X is an integer in ``[0, n_bins)``."""
    X = np.asarray(X)
    if not np.all((X == np.round(X)) & (X >= 0) & (X < n_bins)):
        raise ValueError(
            f"With n_bins={n_bins}, pixels must be integers in [0, {n_bins}); got values in "
            f"[{X.min()}, {X.max()}]{'' if np.all(X == np.round(X)) else ' that are not all integers'}."
        )
