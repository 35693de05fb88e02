"""Loaders for data sets in the user's own files: ``.npz``, MNIST IDX, CIFAR-10, SVHN.

Each returns a `Dataset` of the raw values, unscaled, as float64 inputs (N, d) flat and
int64 labels: exact copies of the files' numbers, ready for `load_task`, which samples the
splits and standardizes. Nothing is downloaded: the user fetches the files once, e.g.

- MNIST IDX: ``train-images-idx3-ubyte.gz`` etc. (LeCun, Cortes & Burges),
- CIFAR-10 "python version": the folder ``cifar-10-batches-py`` (Krizhevsky 2009),
- SVHN "format 2" (cropped digits): ``train_32x32.mat``, ``test_32x32.mat`` (Netzer et al.
  2011).
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from ntkscope._checks import existing_path
from ntkscope.data.builtin import Dataset

_IDX_IMAGES = 0x0803
"""IDX magic number of unsigned-byte 3-D arrays (images): 0x00 0x00, type 0x08, 3 dims."""
_IDX_LABELS = 0x0801
"""IDX magic number of unsigned-byte 1-D arrays (labels)."""

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_SHAPE = (3, 32, 32)


def _labelled(
    x: np.ndarray, y: np.ndarray, name: str, image_shape: tuple[int, int, int] | None
) -> Dataset:
    """A `Dataset` of float64 inputs and, for integer ``y``, int64 class labels."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"data: {name!r} has {x.shape[0]} inputs but {y.shape[0]} labels; expected as many"
        )
    # np.array copies: IDX arrays are read-only views of the file's bytes, which torch refuses
    inputs = torch.from_numpy(np.array(x.reshape(len(x), -1), dtype=np.float64))
    if np.issubdtype(y.dtype, np.floating):
        targets = torch.from_numpy(np.array(y, dtype=np.float64))
        return Dataset(inputs, targets, name, None, image_shape)
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(
            f"data: {name!r} labels must be integers >= 0 (classes) or floats (regression), "
            f"got dtype {y.dtype}"
        )
    n_classes = int(y.max()) + 1 if y.size else 0
    labels = torch.from_numpy(np.array(y, dtype=np.int64))
    return Dataset(inputs, labels, name, n_classes, image_shape)


def read_npz(path: Path, argument: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path`` (a zip of ``.npy`` arrays written by
    ``numpy.savez``, read without pickle); a ValueError naming ``argument`` and the file
    when it is something else (text, a single ``.npy`` array, a damaged archive)."""
    problem = f"{argument}: {str(path)!r} is not a .npz file of arrays written by numpy.savez"
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise ValueError(problem) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{problem} (it holds one .npy array)")
    with loaded:
        try:
            return {key: loaded[key] for key in loaded.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{problem} ({error})") from None


def npz_pair(
    arrays: dict[str, np.ndarray], keys: tuple[str, str], arguments: tuple[str, str], path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets ``keys`` of an ``.npz`` file's ``arrays``: both present, finite and
    with as many rows; errors name the argument blamed for each key, the key and the file."""
    for key, argument in zip(keys, arguments, strict=True):
        if key not in arrays:
            raise ValueError(
                f"{argument}: {str(path)!r} has no array {key!r}; it has {sorted(arrays)}"
            )
        array = arrays[key]
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            raise ValueError(
                f"{argument}: array {key!r} of {str(path)!r} contains NaN or infinite values"
            )
        if array.ndim == 0:
            raise ValueError(f"{argument}: array {key!r} of {str(path)!r} is a scalar")
    x, y = (arrays[key] for key in keys)
    if len(x) != len(y):
        raise ValueError(
            f"{arguments[1]}: array {keys[1]!r} of {str(path)!r} has {len(y)} rows but "
            f"{keys[0]!r} has {len(x)}; expected as many"
        )
    return x, y


def load_npz(path: str | PathLike[str], *, x_key: str = "x", y_key: str = "y") -> Dataset:
    """A data set saved with ``numpy.savez(path, x=inputs, y=labels)``.

    Args:
        path: the ``.npz`` file.
        x_key: name of the inputs array: (N, d) vectors, (N, H, W) one-channel images or
            (N, C, H, W) images (channels first).
        y_key: name of the labels (N,): integers 0..C−1, every class present, are classes
            (``n_classes`` is C), floats are regression targets.

    Returns:
        The `Dataset` named after the file's stem, inputs float64 (N, d) flat.

    Raises:
        FileNotFoundError: if the file does not exist. ValueError: if a key is missing, an
            array holds NaN or infinite values, the labels are not a vector as long as the
            inputs, or are integers other than 0..C−1 with every class present.
    """
    path = existing_path(path, "path")
    arrays = read_npz(path, "path")
    if y_key in arrays and arrays[y_key].ndim != 1:
        raise ValueError(f"{y_key}: expected labels of shape (N,), got {arrays[y_key].shape}")
    if x_key in arrays and not 2 <= arrays[x_key].ndim <= 4:
        raise ValueError(
            f"{x_key}: expected (N, d), (N, H, W) or (N, C, H, W), got {arrays[x_key].shape}"
        )
    x, y = npz_pair(arrays, (x_key, y_key), ("x_key", "y_key"), path)
    image_shape = {2: None, 3: (1, *x.shape[1:]), 4: x.shape[1:]}[x.ndim]
    data = _labelled(x, y, path.stem, image_shape)
    present = np.unique(y) if data.n_classes is not None else None
    if present is not None and len(present) != data.n_classes:
        shown = ", ".join(map(str, present[:10].tolist())) + (", ..." if len(present) > 10 else "")
        raise ValueError(
            f"y_key: the classes in {y_key!r} of {str(path)!r} are {{{shown}}}; class labels "
            f"must be 0..C−1 with every class present (relabel them, e.g. by "
            f"np.unique(y, return_inverse=True)[1])"
        )
    return data


def _read_idx(path: Path, magic: int, argument: str) -> np.ndarray:
    """The unsigned-byte array of an IDX file (gzip-compressed or raw)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "a file shorter than 4 bytes" if found is None else f"0x{found:08x}"
        raise ValueError(
            f"{argument}: {str(path)!r} is not an IDX file of {ndim}-D unsigned bytes: "
            f"magic number {shown}, expected 0x{magic:08x}"
        )
    shape = tuple(int(n) for n in np.frombuffer(raw[4:header], dtype=">u4"))
    data = np.frombuffer(raw, dtype=np.uint8, offset=min(header, len(raw)))
    if len(shape) != ndim or data.size != np.prod(shape):
        raise ValueError(
            f"{argument}: {str(path)!r} holds {data.size} bytes of data after its header, "
            f"its header announces shape {shape}"
        )
    return data.reshape(shape)


def load_idx(images_path: str | PathLike[str], labels_path: str | PathLike[str]) -> Dataset:
    """Images and labels in the IDX format of MNIST (LeCun et al.), gzip-compressed or raw.

    An IDX file is a big-endian header, the magic number ``0x00000803`` (unsigned bytes,
    3 dims) for images or ``0x00000801`` for labels, then one 32-bit size per dimension,
    then the bytes in row-major order.

    Args:
        images_path: e.g. ``train-images-idx3-ubyte.gz``, images (N, H, W).
        labels_path: e.g. ``train-labels-idx1-ubyte.gz``, labels (N,).

    Returns:
        The `Dataset` (named after the images file), pixels 0..255 as float64 (N, H·W),
        ``image_shape`` (1, H, W), ``n_classes`` the largest label + 1.

    Raises:
        FileNotFoundError: for a missing file. ValueError: for a wrong magic number, a size
            that disagrees with the header, or different numbers of images and labels.
    """
    images = _read_idx(existing_path(images_path, "images_path"), _IDX_IMAGES, "images_path")
    labels = _read_idx(existing_path(labels_path, "labels_path"), _IDX_LABELS, "labels_path")
    name = Path(images_path).name.removesuffix(".gz")
    return _labelled(images, labels, name, (1, *images.shape[1:]))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a CIFAR batch runs no code.

    ``_codecs.encode`` is how pickle protocol 2 rebuilds bytes written by Python 3, and
    ``_frombuffer`` how protocol 5 rebuilds arrays, ``scalar`` how numpy integers are rebuilt.
    """

    _ALLOWED = frozenset(
        {
            ("_codecs", "encode"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as file:
        try:
            batch = _ArrayUnpickler(file, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"root: {str(path)!r} is not a CIFAR-10 batch ({error})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"root: {str(path)!r} is not a CIFAR-10 batch (no dict inside)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"root: {str(path)!r} has no 'data' and 'labels' entries")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != np.prod(_CIFAR_SHAPE):
        raise ValueError(f"root: {str(path)!r} has data of shape {data.shape}, expected (N, 3072)")
    return data, labels


def load_cifar10(root: str | PathLike[str], *, train: bool = True) -> Dataset:
    """CIFAR-10 from its "python version" batches (Krizhevsky 2009).

    Each batch is a pickled dict with ``data`` (N, 3072) uint8, the red, green and blue
    32×32 planes of each image in turn, and ``labels`` (N,) in 0..9. The batches are
    unpickled by a loader that admits numpy arrays and plain containers only, so a file
    cannot run code.

    Args:
        root: the folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``
            (``cifar-10-batches-py``), or a folder that contains that one.
        train: the 50,000 training images (the five data batches) if True, the 10,000 test
            images otherwise.

    Returns:
        The `Dataset`, pixels 0..255 as float64 (N, 3072), ``image_shape`` (3, 32, 32),
        10 classes (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).

    Raises:
        FileNotFoundError: if ``root`` or one of the batches is missing. ValueError: for a
            file that is not a CIFAR-10 batch.
    """
    root = existing_path(root, "root")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    batches = []
    for name in _CIFAR_TRAIN if train else _CIFAR_TEST:
        if not (root / name).is_file():
            raise FileNotFoundError(f"root: no CIFAR-10 batch {name!r} in {str(root)!r}")
        batches.append(_cifar_batch(root / name))
    x = np.concatenate([data for data, _ in batches])
    y = np.concatenate([labels for _, labels in batches])
    data = _labelled(x, y, "cifar10" if train else "cifar10_test", _CIFAR_SHAPE)
    return Dataset(data.x, data.y, data.name, 10, data.image_shape)


def load_svhn(path: str | PathLike[str]) -> Dataset:
    """SVHN cropped digits (Netzer et al. 2011, "format 2") from a ``.mat`` file.

    The file holds ``X`` (32, 32, 3, N) uint8, image index last, and ``y`` (N, 1) in 1..10,
    where 10 stands for the digit 0.

    Args:
        path: e.g. ``train_32x32.mat`` or ``test_32x32.mat``.

    Returns:
        The `Dataset` (named after the file's stem), pixels 0..255 as float64 (N, 3·H·W)
        channels first, ``image_shape`` (3, H, W), labels the digits 0..9 (10 mapped to 0).

    Raises:
        FileNotFoundError: if the file is missing. ValueError: if it has no ``X`` or ``y``,
            ``X`` is not (H, W, 3, N), or the labels are not N values in 1..10.
    """
    from scipy.io import loadmat

    path = existing_path(path, "path")
    arrays = loadmat(path)
    if "X" not in arrays or "y" not in arrays:
        raise ValueError(f"path: {str(path)!r} has no arrays 'X' and 'y' (SVHN format 2)")
    x, y = arrays["X"], arrays["y"].reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3:
        raise ValueError(f"path: {str(path)!r} has X of shape {x.shape}, expected (H, W, 3, N)")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"path: {str(path)!r} has labels outside 1..10 (10 stands for 0)")
    images = x.transpose(3, 2, 0, 1)
    data = _labelled(images, (y % 10).astype(np.int64), path.stem, images.shape[1:])
    return Dataset(data.x, data.y, data.name, 10, data.image_shape)
