import gzip
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch
from scipy.io import savemat

from ntkscope.data import load_cifar10, load_idx, load_npz, load_svhn, load_task

RNG = np.random.default_rng(0)


def pixels(*shape):
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def cycling_labels(n):
    return np.arange(n) % 10


# ---- IDX (MNIST) ----------------------------------------------------------------------


def write_idx(path, array, magic=None, *, compress=False):
    """The IDX format by hand: magic (0x0000, type 0x08, ndim), big-endian sizes, bytes."""
    magic = 0x0800 | array.ndim if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images, labels = pixels(12, 5, 4), cycling_labels(12)
    data = load_idx(
        write_idx(tmp_path / "images-idx3-ubyte", images, compress=compress),
        write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=compress),
    )
    assert data.x.dtype == torch.float64 and data.y.dtype == torch.int64
    assert torch.equal(data.as_images(), torch.as_tensor(images, dtype=torch.float64)[:, None])
    assert torch.equal(data.y, torch.as_tensor(labels))
    assert (data.n_classes, data.image_shape) == (10, (1, 5, 4))


def test_idx_errors(tmp_path):
    images = write_idx(tmp_path / "images", pixels(3, 2, 2))
    labels = write_idx(tmp_path / "labels", cycling_labels(3))
    with pytest.raises(FileNotFoundError, match=r"^images_path: no such file"):
        load_idx(tmp_path / "missing", labels)
    with pytest.raises(
        ValueError, match=r"^labels_path: .* magic number 0x00000803, expected 0x00000801"
    ):
        load_idx(images, images)
    with pytest.raises(ValueError, match=r"^images_path: .* magic number 0x00000801"):
        load_idx(labels, labels)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"^images_path: .* 11 bytes .* shape \(3, 2, 2\)"):
        load_idx(truncated, labels)
    four = write_idx(tmp_path / "four", cycling_labels(4))
    with pytest.raises(ValueError, match=r"3 inputs but 4 labels"):
        load_idx(images, four)


def test_mnist_task_from_idx_folder(tmp_path):
    for split, n in (("train", 60), ("t10k", 30)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", pixels(n, 28, 28), compress=True)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", cycling_labels(n))
    test_images = load_idx(
        tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte"
    )
    task = load_task("mnist_parity", root=tmp_path, n_val=10, image_size=14, dtype=torch.float64)
    assert (len(task.train), len(task.val), len(task.test)) == (50, 10, 30)  # official test set
    assert task.image_shape == (1, 14, 14) and str(tmp_path) in task.description
    assert sorted(task.test.y.tolist()) == sorted((test_images.y % 2).tolist())
    with pytest.raises(ValueError, match=r"^n_test: 'mnist_parity' has 30 test examples"):
        load_task("mnist_parity", root=tmp_path, n_test=31)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"^root: no MNIST IDX file 't10k-labels-idx1-ubyte'"
    ):
        load_task("mnist", root=tmp_path)


# ---- CIFAR-10 -------------------------------------------------------------------------


def write_cifar(folder, n_per_batch=20, protocol=2, numpy_labels=False):
    """Five data batches and a test batch, pickled like the originals (bytes keys)."""
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": pixels(n_per_batch, 3072),
            b"labels": cycling_labels(n_per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[name] = batch
    return batches


@pytest.mark.parametrize(("protocol", "numpy_labels"), [(2, False), (5, True)])
def test_cifar10_round_trip(tmp_path, protocol, numpy_labels):
    batches = write_cifar(
        tmp_path / "cifar-10-batches-py", protocol=protocol, numpy_labels=numpy_labels
    )
    train, test = (
        load_cifar10(tmp_path),
        load_cifar10(tmp_path / "cifar-10-batches-py", train=False),
    )
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert torch.equal(train.x, torch.as_tensor(expected, dtype=torch.float64))
    assert train.y.tolist() == cycling_labels(20).tolist() * 5
    assert torch.equal(test.x, torch.as_tensor(batches["test_batch"][b"data"], dtype=torch.float64))
    assert (train.n_classes, train.image_shape) == (10, (3, 32, 32))
    # planes R, G, B of 32×32 pixels, in turn
    assert torch.equal(test.as_images()[1, 2, 0], test.x[1, 2048:2080])


def test_cifar10_binary_task(tmp_path):
    write_cifar(tmp_path / "batches")
    task = load_task("cifar10_binary", root=tmp_path / "batches", n_val=20, image_size=16)
    assert (len(task.train), len(task.val), len(task.test)) == (80, 20, 20)
    assert task.image_shape == (3, 16, 16) and task.n_classes == 2
    full = load_cifar10(tmp_path / "batches", train=False)
    assert sorted(task.test.y.tolist()) == sorted((full.y >= 5).long().tolist())


class Exploit:
    def __reduce__(self):
        return (print, ("ran code",))


def test_cifar10_errors(tmp_path):
    write_cifar(tmp_path / "batches")
    (tmp_path / "batches" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"^root: no CIFAR-10 batch 'data_batch_3'"):
        load_cifar10(tmp_path / "batches")
    (tmp_path / "batches" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(ValueError, match=r"not a CIFAR-10 batch .*refusing to load builtins.print"):
        load_cifar10(tmp_path / "batches", train=False)
    (tmp_path / "batches" / "test_batch").write_bytes(
        pickle.dumps({b"data": pixels(4, 100), b"labels": [0, 1, 2, 3]})
    )
    with pytest.raises(ValueError, match=r"^root: .* shape \(4, 100\), expected \(N, 3072\)"):
        load_cifar10(tmp_path / "batches", train=False)
    with pytest.raises(FileNotFoundError, match=r"^root: no such file"):
        load_cifar10(tmp_path / "nowhere")


# ---- SVHN -----------------------------------------------------------------------------


def write_svhn(path, n):
    x, y = pixels(32, 32, 3, n), (cycling_labels(n) + 1)[:, None]  # labels 1..10, 10 is 0
    savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_round_trip(tmp_path):
    x, y = write_svhn(tmp_path / "train_32x32.mat", 15)
    data = load_svhn(tmp_path / "train_32x32.mat")
    assert torch.equal(
        data.as_images(), torch.as_tensor(x.transpose(3, 2, 0, 1), dtype=torch.float64)
    )
    assert data.y.tolist() == (y[:, 0] % 10).tolist() and 0 in data.y.tolist()
    assert (data.n_classes, data.image_shape, data.name) == (10, (3, 32, 32), "train_32x32")


def test_svhn_parity_task(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", 60)
    one_file = load_task("svhn_parity", root=tmp_path / "train_32x32.mat", n_test=20, n_val=10)
    assert (len(one_file.train), len(one_file.val), len(one_file.test)) == (30, 10, 20)
    with pytest.raises(FileNotFoundError, match=r"^root: no SVHN file 'test_32x32.mat'"):
        load_task("svhn_parity", root=tmp_path)
    write_svhn(tmp_path / "test_32x32.mat", 30)
    folder = load_task("svhn_parity", root=tmp_path, n_val=10, image_size=8)
    assert (len(folder.train), len(folder.val), len(folder.test)) == (50, 10, 30)
    assert folder.image_shape == (3, 8, 8) and set(folder.test.y.tolist()) == {0, 1}


def test_svhn_errors(tmp_path):
    savemat(tmp_path / "flat.mat", {"X": pixels(32, 32, 5), "y": np.ones((5, 1))})
    with pytest.raises(ValueError, match=r"^path: .* shape \(32, 32, 5\), expected \(H, W, 3, N\)"):
        load_svhn(tmp_path / "flat.mat")
    savemat(tmp_path / "zero.mat", {"X": pixels(32, 32, 3, 2), "y": np.zeros((2, 1))})
    with pytest.raises(ValueError, match=r"^path: .* labels outside 1\.\.10"):
        load_svhn(tmp_path / "zero.mat")
    savemat(tmp_path / "nox.mat", {"y": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"^path: .* no arrays 'X' and 'y'"):
        load_svhn(tmp_path / "nox.mat")


# ---- npz ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "image_shape"),
    [((9, 6), None), ((9, 4, 4), (1, 4, 4)), ((9, 3, 2, 2), (3, 2, 2))],
)
def test_npz_round_trip(tmp_path, shape, image_shape):
    x, y = RNG.normal(size=shape), cycling_labels(9)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    data = load_npz(tmp_path / "mine.npz")
    assert torch.equal(data.x, torch.as_tensor(x.reshape(9, -1)))
    assert torch.equal(data.y, torch.as_tensor(y)) and data.y.dtype == torch.int64
    assert (data.name, data.n_classes, data.image_shape) == ("mine", 9, image_shape)


def test_npz_keys_regression_and_task(tmp_path):
    x, y = RNG.normal(size=(40, 5)), RNG.normal(size=40)
    np.savez(tmp_path / "reg.npz", inputs=x, targets=y, x=x, y=y, x_test=x[:10], y_test=y[:10])
    data = load_npz(tmp_path / "reg.npz", x_key="inputs", y_key="targets")
    assert torch.equal(data.y, torch.as_tensor(y)) and data.n_classes is None
    task = load_task("npz", root=tmp_path / "reg.npz", n_val=5, dtype=torch.float64)
    assert (len(task.train), len(task.val), len(task.test)) == (35, 5, 10)
    assert task.n_classes is None and task.train.y.dtype == torch.float64
    assert "real targets" in task.description


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2)), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"^y_key: .* no array 'y'; it has \['labels', 'x'\]"):
        load_npz(tmp_path / "a.npz")
    with pytest.raises(FileNotFoundError, match=r"^path: no such file"):
        load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=np.ones((3, 2)), y=np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"^y: expected labels of shape \(N,\)"):
        load_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"^y_key: array 'y' of .* has 4 rows but 'x' has 3"):
        load_npz(tmp_path / "d.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=r"^path: .*text.npz' is not a .npz file of arrays"):
        load_npz(tmp_path / "text.npz")
    np.savez(tmp_path / "e.npz", x=np.ones(3), y=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"^x: expected \(N, d\)"):
        load_npz(tmp_path / "e.npz")
    np.savez(tmp_path / "f.npz", x=RNG.normal(size=(3, 2)), y=np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"labels must be integers >= 0"):
        load_npz(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", x=np.ones((20, 2)), y=np.zeros(20))
    with pytest.raises(ValueError, match=r"constant example"):
        load_task("npz", root=tmp_path / "g.npz")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.array([[0.0, np.nan], [1.0, 2.0]]), "y": np.array([0, 1])}, "x_key: array 'x'"),
        ({"x": np.array([[0.0, np.inf], [1.0, 2.0]]), "y": np.array([0, 1])}, "x_key: array 'x'"),
        ({"x": RNG.normal(size=(2, 2)), "y": np.array([0.5, np.nan])}, "y_key: array 'y'"),
    ],
)
def test_npz_non_finite_values_are_refused_naming_the_key(tmp_path, arrays, message):
    # they used to pass into the Dataset and on through load_task("npz")
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ValueError, match=message + ".* contains NaN or infinite values"):
        load_npz(tmp_path / "nan.npz")
    with pytest.raises(ValueError, match=message):
        load_task("npz", root=tmp_path / "nan.npz")


def test_npz_class_labels_must_be_contiguous_from_zero(tmp_path):
    # labels {0, 5} used to give n_classes = 6 and a confusing empty-class error later
    np.savez(tmp_path / "gap.npz", x=RNG.normal(size=(4, 3)), y=np.array([0, 5, 5, 0]))
    with pytest.raises(ValueError, match=r"^y_key: the classes in 'y' .* are \{0, 5\}; .*0\.\.C"):
        load_npz(tmp_path / "gap.npz")


def test_idx_loads_without_a_non_writable_array_warning(tmp_path):
    images = write_idx(tmp_path / "img", pixels(4, 3, 3))
    labels = write_idx(tmp_path / "lab", cycling_labels(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_idx(images, labels)
    assert data.x.shape == (4, 9) and data.n_classes == 4
