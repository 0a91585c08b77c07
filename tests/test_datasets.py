"""softlabel_ood.data.datasets: every kind of source, on data the tests make or that ships
offline."""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from softlabel_ood.data import datasets, synthetic
from softlabel_ood.data import images as image_lib
from tests import idx_files
from tests.train_helpers import run_module

INTERFACE_NAMES = (
    "cifar10", "cifar100", "svhn", "textures", "places365", "fashion_mnist", "mnist", "digits",
    "digits28", "china_patches", "flower_patches", "gaussian", "rademacher", "blobs", "uniform",
    "lsun_crop", "lsun_resize", "tinyimagenet_crop", "tinyimagenet_resize", "isun", "random_300k",
    "fashion_mnist6", "fashion_mnist_heldout",
)
TFDS_NAMES = ("cifar10", "cifar100", "svhn", "textures", "places365", "fashion_mnist", "mnist")
# Classes of a tfds set (or of its IDX files): read through tfds without a path, as it is.
CLASS_SUBSET_NAMES = ("fashion_mnist6", "fashion_mnist_heldout")
SYNTHETIC_NAMES = ("gaussian", "rademacher", "blobs", "uniform")
# As the module docstring documents them: sources that need a path, and those that may take one.
PATH_REQUIRED = ("lsun_crop", "lsun_resize", "tinyimagenet_crop", "tinyimagenet_resize", "isun",
                 "random_300k", "local_images")
PATH_OPTIONAL = ("fashion_mnist", "mnist", *CLASS_SUBSET_NAMES)


def _check(ds: datasets.ArrayDataset, count: int, shape) -> None:
    assert ds.images.dtype == np.uint8
    assert ds.images.shape == (count, *shape)
    assert ds.labels.dtype == np.int32
    assert ds.labels.shape == (count,)


# ---------------------------------------------------------------------------------------------
# names and info


def test_every_agreed_name_has_info_with_consistent_constants():
    assert set(INTERFACE_NAMES) <= set(datasets.NAMES)
    for name in datasets.NAMES:
        info = datasets.info(name)
        channels = info.image_shape[-1]
        assert len(info.mean) == len(info.std) == channels, name
        assert all(0 <= m <= 1 for m in info.mean), name
        assert all(s > 0 for s in info.std), name
    assert datasets.info("cifar10").augment
    assert datasets.info("cifar100").augment
    assert not datasets.info("digits").augment
    assert not datasets.info("fashion_mnist").augment
    assert datasets.info("cifar100").num_classes == 100
    assert datasets.info("gaussian").num_classes == 0


def test_unknown_name_split_shape_and_stray_path_are_clear_errors(tmp_path):
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'cifar11'"):
        datasets.info("cifar11")
    with pytest.raises(datasets.DatasetError, match="digits: unknown split 'val'"):
        datasets.load("digits", "val")
    with pytest.raises(datasets.DatasetError, match="image_shape"):
        datasets.load("digits", "test", image_shape=(8, 8, 2))
    with pytest.raises(datasets.DatasetError, match=r"gaussian/test: .*path="):
        datasets.load("gaussian", "test", path=str(tmp_path))


@pytest.mark.parametrize("name", datasets.NAMES)
def test_every_record_takes_a_path_exactly_when_documented(name, tmp_path):
    """Each name's source agrees with the documented path rules, in `load` and `check_available`:
    refused when it reads no files, asked for (naming what to point at) when it needs one."""
    if name in PATH_REQUIRED + PATH_OPTIONAL:
        # Accepted: the folder is empty, so loading fails later, on what the folder lacks.
        with pytest.raises(datasets.DatasetError, match=f"^{name}/test: ") as error:
            datasets.load(name, "test", path=str(tmp_path))
        assert "reads no local files" not in str(error.value)
        if name in PATH_OPTIONAL:
            # IDX files are looked up by name: the empty folder lacks them.
            with pytest.raises(datasets.DatasetError,
                               match=f"^{name}/test: IDX files .* not found"):
                datasets.check_available(name, "test", path=str(tmp_path))
        else:
            # Found wanting without reading an image: the folder holds no image files.
            with pytest.raises(datasets.DatasetError,
                               match=f"^{name}/test: folder .* holds no image files"):
                datasets.check_available(name, "test", path=str(tmp_path))
    else:
        refusal = (rf"^{name}/test: this source reads no local files, but "
                   rf"path={re.escape(str(tmp_path))} was given$")
        with pytest.raises(datasets.DatasetError, match=refusal):
            datasets.load(name, "test", path=str(tmp_path))
        with pytest.raises(datasets.DatasetError, match=refusal):
            datasets.check_available(name, "test", path=str(tmp_path))
    if name in PATH_REQUIRED:
        asked = rf"^{name}/test: no path given; point it \(config dataset_paths\.{name}\) at \w"
        with pytest.raises(datasets.DatasetError, match=asked) as error:
            datasets.load(name, "test")
        assert "None" not in str(error.value)
        with pytest.raises(datasets.DatasetError, match=asked):
            datasets.check_available(name, "test")


@pytest.mark.parametrize(
    "name", [n for n in datasets.NAMES if n not in TFDS_NAMES + CLASS_SUBSET_NAMES + PATH_REQUIRED])
def test_every_offline_record_loads_at_its_shape_with_labels_in_range(name):
    info = datasets.info(name)
    for split in datasets.SPLITS:
        ds = datasets.load(name, split, num_examples=3, seed=1)
        _check(ds, 3, info.image_shape)
        if info.num_classes == 0:
            assert (ds.labels == -1).all()
        else:
            assert ((ds.labels >= 0) & (ds.labels < info.num_classes)).all()
        datasets.check_available(name, split)


def test_local_file_records_read_any_split_unlabeled_at_their_shape(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    for name in PATH_REQUIRED:
        for split in datasets.SPLITS:
            ds = datasets.load(name, split, path=str(tmp_path / "images.npy"))
            _check(ds, 5, datasets.info(name).image_shape)
            assert (ds.labels == -1).all()


# ---------------------------------------------------------------------------------------------
# tfds sources, through tfds.testing.mock_data (the real reading code, generated examples)


@pytest.fixture(scope="module")
def tfds_lib():
    import tensorflow_datasets as tfds

    return tfds


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_tfds_source_under_mock_data(name, tfds_lib, tmp_path):
    info = datasets.info(name)
    with tfds_lib.testing.mock_data(num_examples=6, policy=tfds_lib.testing.MockPolicy.USE_CODE):
        full = datasets.load(name, "test", data_dir=str(tmp_path))
        subset = datasets.load(name, "test", data_dir=str(tmp_path), num_examples=4, seed=3)
        again = datasets.load(name, "test", data_dir=str(tmp_path), num_examples=4, seed=3)
        other = datasets.load(name, "test", data_dir=str(tmp_path), image_shape=(20, 24, 1))
    _check(full, 6, info.image_shape)
    assert ((full.labels >= 0) & (full.labels < info.num_classes)).all()
    _check(subset, 4, info.image_shape)
    np.testing.assert_array_equal(subset.images, again.images)
    # A subset keeps the source's order: it is a subsequence of the full split.
    rows = [int(np.flatnonzero((full.images == im).all(axis=(1, 2, 3)))[0]) for im in subset.images]
    assert rows == sorted(rows)
    assert len(set(rows)) == 4
    np.testing.assert_array_equal(subset.labels, full.labels[rows])
    _check(other, 6, (20, 24, 1))


def test_tfds_source_without_prepared_data_names_the_dataset(tfds_lib, tmp_path):
    with pytest.raises(datasets.DatasetError,
                       match=r"cifar100/test: tfds dataset cifar100:3\.0\.2 .*prepare_tfds"):
        datasets.load("cifar100", "test", data_dir=str(tmp_path))
    with pytest.raises(datasets.DatasetError, match="textures: no split 'train'"):
        datasets.load("textures", "train", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# fashion_mnist / mnist from IDX files


# What a Fashion-MNIST IDX error adds: the package that installs the files.
INSTALLED_NOTE = ("(`apt-get install dataset-fashion-mnist` installs Fashion-MNIST's in "
                  "/usr/share/datasets/fashion-mnist)")


def test_fashion_mnist_and_mnist_read_idx_files(tmp_path, tfds_lib):
    rng = np.random.default_rng(0)
    gz = idx_files.write_idx_folder(tmp_path / "gz", rng, gz=True)
    raw = idx_files.write_idx_folder(tmp_path / "raw", rng, gz=False)
    train = datasets.load("fashion_mnist", "train", path=str(tmp_path / "gz"))
    _check(train, 12, (28, 28, 1))
    np.testing.assert_array_equal(train.images[..., 0], gz["train"][0])
    np.testing.assert_array_equal(train.labels, gz["train"][1])
    test = datasets.load("mnist", "test", path=str(tmp_path / "raw"), image_shape=(32, 32, 3))
    _check(test, 5, (32, 32, 3))
    np.testing.assert_array_equal(test.labels, raw["t10k"][1])

    # Without a path the same names read tfds, even where Debian's IDX files are installed.
    with tfds_lib.testing.mock_data(num_examples=3, policy=tfds_lib.testing.MockPolicy.USE_CODE):
        assert len(datasets.load("fashion_mnist", "test")) == 3

    with pytest.raises(datasets.DatasetError, match=r"fashion_mnist/train: IDX files .* not found "
                       f"in {tmp_path / 'missing'}"):
        datasets.load("fashion_mnist", "train", path=str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    (tmp_path / "bad" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 4)
    with pytest.raises(datasets.DatasetError, match="fashion_mnist/train: cannot read IDX"):
        datasets.load("fashion_mnist", "train", path=str(tmp_path / "bad"))


def test_an_idx_folder_without_the_splits_files_is_refused_before_loading(tmp_path):
    rng = np.random.default_rng(0)
    idx_files.write_idx_folder(tmp_path / "idx", rng, gz=True)
    datasets.check_available("fashion_mnist", "test", path=str(tmp_path / "idx"))
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    datasets.check_available("fashion_mnist", "train", path=str(tmp_path / "idx"))
    # The folder exists, but the test split's labels do not: refused without reading a file.
    with pytest.raises(datasets.DatasetError, match=r"^fashion_mnist/test: IDX files "
                       r"t10k-images-idx3-ubyte\[.gz\] and t10k-labels-idx1-ubyte\[.gz\] "
                       f"not found in {tmp_path / 'idx'} {re.escape(INSTALLED_NOTE)}$"):
        datasets.check_available("fashion_mnist", "test", path=str(tmp_path / "idx"))
    # mnist: no package installs its files, so its line names none.
    idx_files.write_idx_folder(tmp_path / "mnist", rng, gz=True)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(datasets.DatasetError, match=r"^mnist/test: IDX files .* not found in "
                       f"{tmp_path / 'mnist'}$"):
        datasets.check_available("mnist", "test", path=str(tmp_path / "mnist"))


def test_a_missing_fashion_mnist_folder_names_the_package_that_installs_it(tmp_path):
    missing = tmp_path / "fashion-mnist"
    for name in ("fashion_mnist", "fashion_mnist6", "fashion_mnist_heldout"):
        with pytest.raises(datasets.DatasetError) as e:
            datasets.check_available(name, "test", path=str(missing))
        assert str(e.value) == (
            f"{name}/test: {missing} does not exist (config dataset_paths.{name}: a folder of "
            "MNIST-format IDX files; `apt-get install dataset-fashion-mnist` installs "
            "Fashion-MNIST's in /usr/share/datasets/fashion-mnist)")
    # A source that no package installs keeps the plain line.
    with pytest.raises(datasets.DatasetError) as e:
        datasets.check_available("mnist", "test", path=str(missing))
    assert str(e.value) == f"mnist/test: {missing} does not exist (config dataset_paths.mnist)"


def test_real_fashion_mnist_idx_files_when_installed():
    """Debian's dataset-fashion-mnist files, if installed: the 70,000 images and the constants."""
    folder = pathlib.Path(datasets.FASHION_MNIST_IDX_DIR)
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        # The small written IDX files above cover the reader; this checks the real release,
        # which .ci/run's second step installs. Say so rather than pass without checking anything.
        pytest.skip(f"{folder}: not installed (apt-get install dataset-fashion-mnist)")
    test = datasets.load("fashion_mnist", "test", path=str(folder))
    _check(test, 10_000, (28, 28, 1))
    assert np.bincount(test.labels).tolist() == [1000] * 10
    train = datasets.load("fashion_mnist", "train", path=str(folder))
    _check(train, 60_000, (28, 28, 1))
    info = datasets.info("fashion_mnist")
    assert train.images.mean() / 255 == pytest.approx(info.mean[0], abs=1e-4)
    assert train.images.std() / 255 == pytest.approx(info.std[0], abs=1e-4)


# ---------------------------------------------------------------------------------------------
# fashion_mnist6 / fashion_mnist_heldout: classes of fashion_mnist (data/class_subset.py)


def _read_idx_reference(path: pathlib.Path) -> np.ndarray:
    """An IDX file read here, independently of data/idx_files.py: header, dims, bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_class_subsets_read_the_idx_files_of_fashion_mnist(tmp_path):
    rng = np.random.default_rng(6)
    arrays = {}
    for prefix, count in (("train", 30), ("t10k", 20)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        idx_files.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, gz=True)
        idx_files.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, gz=True)
        arrays[prefix] = (images, labels)
    images, labels = arrays["train"]
    train6 = datasets.load("fashion_mnist6", "train", path=str(tmp_path))
    _check(train6, 18, (28, 28, 1))
    np.testing.assert_array_equal(train6.images[..., 0], images[labels < 6])
    np.testing.assert_array_equal(train6.labels, labels[labels < 6])
    images, labels = arrays["t10k"]
    held = datasets.load("fashion_mnist_heldout", "test", path=str(tmp_path))
    _check(held, 8, (28, 28, 1))
    np.testing.assert_array_equal(held.images[..., 0], images[labels >= 6])
    np.testing.assert_array_equal(held.labels, labels[labels >= 6] - 6)
    # A cap draws among the held-out images, seeded by the name: always the same subsequence.
    capped = datasets.load("fashion_mnist_heldout", "test", path=str(tmp_path), num_examples=5)
    _check(capped, 5, (28, 28, 1))
    rows = [int(np.flatnonzero((held.images == im).all(axis=(1, 2, 3)))[0])
            for im in capped.images]
    assert rows == sorted(set(rows))
    np.testing.assert_array_equal(
        capped.images,
        datasets.load("fashion_mnist_heldout", "test", path=str(tmp_path), num_examples=5).images)
    assert datasets.info("fashion_mnist6").num_classes == 6
    assert datasets.info("fashion_mnist_heldout").num_classes == 4

    # Errors name the subset, its split and its own config field.
    with pytest.raises(datasets.DatasetError, match=r"^fashion_mnist6/train: IDX files .* not "
                       f"found in {tmp_path / 'missing'} {re.escape(INSTALLED_NOTE)}$"):
        datasets.load("fashion_mnist6", "train", path=str(tmp_path / "missing"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(datasets.DatasetError, match=r"^fashion_mnist_heldout/test: IDX files "):
        datasets.check_available("fashion_mnist_heldout", "test", path=str(tmp_path))
    with pytest.raises(datasets.DatasetError, match=r"^fashion_mnist_heldout/test: .*set "
                       r"dataset_paths\.fashion_mnist_heldout to a folder of IDX files"):
        datasets.check_available("fashion_mnist_heldout", "test", data_dir=str(tmp_path / "tfds"))


def test_class_subsets_under_tfds_mock_data(tfds_lib, tmp_path):
    with tfds_lib.testing.mock_data(num_examples=40, policy=tfds_lib.testing.MockPolicy.USE_CODE):
        full = datasets.load("fashion_mnist", "test", data_dir=str(tmp_path))
        six = datasets.load("fashion_mnist6", "test", data_dir=str(tmp_path))
        held = datasets.load("fashion_mnist_heldout", "test", data_dir=str(tmp_path))
        datasets.check_available("fashion_mnist6", "train", data_dir=str(tmp_path))
    kept = full.labels < 6
    assert 0 < kept.sum() < 40
    np.testing.assert_array_equal(six.images, full.images[kept])
    np.testing.assert_array_equal(six.labels, full.labels[kept])
    np.testing.assert_array_equal(held.images, full.images[~kept])
    np.testing.assert_array_equal(held.labels, full.labels[~kept] - 6)


def test_real_fashion_mnist_class_subsets_when_installed():
    """fashion_mnist6 and fashion_mnist_heldout against the real IDX files, read here."""
    folder = pathlib.Path(datasets.FASHION_MNIST_IDX_DIR)
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{folder}: not installed (apt-get install dataset-fashion-mnist)")
    train_images = _read_idx_reference(folder / "train-images-idx3-ubyte.gz")
    train_labels = _read_idx_reference(folder / "train-labels-idx1-ubyte.gz")
    test_images = _read_idx_reference(folder / "t10k-images-idx3-ubyte.gz")
    test_labels = _read_idx_reference(folder / "t10k-labels-idx1-ubyte.gz")

    train6 = datasets.load("fashion_mnist6", "train", path=str(folder))
    _check(train6, 36_000, (28, 28, 1))
    np.testing.assert_array_equal(train6.images[..., 0], train_images[train_labels < 6])
    np.testing.assert_array_equal(train6.labels, train_labels[train_labels < 6])
    info = datasets.info("fashion_mnist6")
    assert train6.images.mean() / 255 == pytest.approx(info.mean[0], abs=1e-4)
    assert train6.images.std() / 255 == pytest.approx(info.std[0], abs=1e-4)

    test6 = datasets.load("fashion_mnist6", "test", path=str(folder))
    _check(test6, 6000, (28, 28, 1))
    np.testing.assert_array_equal(test6.images[..., 0], test_images[test_labels < 6])
    assert np.bincount(test6.labels).tolist() == [1000] * 6

    held = datasets.load("fashion_mnist_heldout", "test", path=str(folder))
    _check(held, 4000, (28, 28, 1))
    np.testing.assert_array_equal(held.images[..., 0], test_images[test_labels >= 6])
    np.testing.assert_array_equal(held.labels, test_labels[test_labels >= 6] - 6)
    # No held-out image is also an image of the ID set, by content: none of the ID test
    # images, none of the training images.
    held_digests = _digests(held.images)
    assert len(held_digests) == 4000
    assert not held_digests & _digests(test6.images)
    assert not held_digests & _digests(train6.images)


# ---------------------------------------------------------------------------------------------
# local files


def test_array_files_npy_npz_layouts_and_conversions(tmp_path):
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (10, 36, 36, 3), dtype=np.uint8)
    np.save(tmp_path / "lsun.npy", big)
    crop = datasets.load("lsun_crop", "test", path=str(tmp_path / "lsun.npy"))
    _check(crop, 10, (32, 32, 3))
    np.testing.assert_array_equal(crop.images, big[:, 2:34, 2:34])  # center crop, no resize
    assert (crop.labels == -1).all()
    resized = datasets.load("lsun_resize", "test", path=str(tmp_path / "lsun.npy"))
    expected = np.asarray(Image.fromarray(big[0]).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resized.images[0], expected)

    nchw = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(6)
    np.savez(tmp_path / "tin.npz", images=nchw, labels=labels)
    tin = datasets.load("tinyimagenet_resize", "test", path=str(tmp_path / "tin.npz"))
    np.testing.assert_array_equal(tin.images, nchw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(tin.labels, labels)

    gray = rng.integers(0, 256, (7, 32, 32), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", x=gray)
    isun = datasets.load("isun", "test", path=str(tmp_path / "gray.npz"))
    np.testing.assert_array_equal(isun.images, np.repeat(gray[..., None], 3, axis=-1))

    # The OE outlier file: uint8 [N, 32, 32, 3]; a subset is seeded, sorted, memory-mapped.
    outliers = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "300K_random_images.npy", outliers)
    path = str(tmp_path / "300K_random_images.npy")
    sub = datasets.load("random_300k", "train", path=path, num_examples=9, seed=5)
    again = datasets.load("random_300k", "train", path=path, num_examples=9, seed=5)
    np.testing.assert_array_equal(sub.images, again.images)
    rows = [int(np.flatnonzero((outliers == im).all(axis=(1, 2, 3)))[0]) for im in sub.images]
    assert rows == sorted(rows)
    assert len(set(rows)) == 9
    assert datasets.load("random_300k", "train", path=path, image_shape=(28, 28, 1)
                         ).images.shape == (40, 28, 28, 1)


def test_image_folder_reads_nested_files_in_sorted_order(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "LSUN" / "test").mkdir(parents=True)
    pictures = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(pictures[0]).save(tmp_path / "LSUN" / "test" / "b.png")
    Image.fromarray(pictures[1]).save(tmp_path / "LSUN" / "test" / "a.png")
    Image.fromarray(pictures[2]).convert("RGBA").save(tmp_path / "LSUN" / "c.png")
    Image.fromarray(pictures[0][..., 0]).save(tmp_path / "LSUN" / "test" / "d.png")  # grayscale
    (tmp_path / "LSUN" / "notes.txt").write_text("not an image")
    ds = datasets.load("lsun_resize", "test", path=str(tmp_path / "LSUN"))
    _check(ds, 4, (32, 32, 3))
    # sorted relative paths: LSUN/c.png, LSUN/test/a.png, LSUN/test/b.png, LSUN/test/d.png
    np.testing.assert_array_equal(ds.images[0], pictures[2])
    np.testing.assert_array_equal(ds.images[1], pictures[1])
    np.testing.assert_array_equal(ds.images[2], pictures[0])
    np.testing.assert_array_equal(ds.images[3], np.repeat(pictures[0][..., :1], 3, axis=-1))
    gray = datasets.load("lsun_resize", "test", path=str(tmp_path / "LSUN"), num_examples=2,
                         image_shape=(16, 16, 1))
    _check(gray, 2, (16, 16, 1))


def _cifar10_archive(root, rng) -> tuple[np.ndarray, np.ndarray]:
    """What cifar-10-binary.tar.gz extracts to, with 2 images per file: the records are a label
    byte and the image's 3072 bytes, channel by channel. Returns the test batch."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, 2, dtype=np.uint8)
        records = [np.r_[label, image.transpose(2, 0, 1).ravel()]
                   for label, image in zip(labels, images, strict=True)]
        (folder / name).write_bytes(np.stack(records).astype(np.uint8).tobytes())
    return images, labels


def test_the_command_a_missing_set_names_prepares_it(tfds_lib, tmp_path, monkeypatch):
    # `tfds build` stops at `import apache_beam` with tensorflow-datasets 4.9.10; the command the
    # error prints runs tfds' own builder instead. The download is served from a local archive.
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(datasets.DatasetError) as error:
        datasets.check_available("cifar10", "test", data_dir=data_dir)
    printed = str(error.value).split("`")[-2]
    assert printed == ("python -m softlabel_ood.data.prepare_tfds cifar10:3.0.2 "
                       f"--data_dir={data_dir}")
    images, labels = _cifar10_archive(tmp_path / "extracted", np.random.default_rng(0))
    urls = []

    def download_and_extract(self, url):
        urls.append(url)
        return str(tmp_path / "extracted")

    monkeypatch.setattr(tfds_lib.download.DownloadManager, "download_and_extract",
                        download_and_extract)
    from softlabel_ood.data import prepare_tfds

    # Served locally, the download needs no host: the check that the host answers is skipped.
    monkeypatch.setattr(prepare_tfds, "check_reachable", lambda name, builder: None)
    prepare_tfds.main(printed.split()[3:])
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    datasets.check_available("cifar10", "test", data_dir=data_dir)
    test = datasets.load("cifar10", "test", data_dir=data_dir)
    # tfds stores the examples in an order of its own (hashed keys): compare them as a set.
    def examples(labels_, images_):
        return sorted(zip(labels_.tolist(), (im.tobytes() for im in images_), strict=True))

    assert examples(test.labels, test.images) == examples(labels, images)
    assert len(datasets.load("cifar10", "train", data_dir=data_dir).labels) == 10


def test_prepare_tfds_refuses_an_unknown_name_and_needs_no_apache_beam(tmp_path):
    result = run_module("softlabel_ood.data.prepare_tfds", "cifar11:3.0.2",
                        f"--data_dir={tmp_path}", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: cifar11:3.0.2: not a tfds dataset this tensorflow-datasets can build")
    assert "apache_beam" not in result.stderr


def test_availability_is_checked_without_reading(tfds_lib, tmp_path):
    with pytest.raises(datasets.DatasetError, match=r"cifar100/test: tfds dataset cifar100:3\.0\.2 "
                       r".*prepare it once with `python -m softlabel_ood\.data\.prepare_tfds "
                       r"cifar100:3\.0\.2 --data_dir="):
        datasets.check_available("cifar100", "test", data_dir=str(tmp_path))
    # The message names the command to run, not an option that the commands do not have.
    with pytest.raises(datasets.DatasetError) as error:
        datasets.check_available("svhn", "test", data_dir=str(tmp_path))
    assert "download" not in str(error.value)
    with tfds_lib.testing.mock_data(num_examples=3):
        datasets.check_available("cifar100", "test", data_dir=str(tmp_path))
    with pytest.raises(datasets.DatasetError, match=r"fashion_mnist/train: .*dataset_paths\."
                                                    r"fashion_mnist to a folder of IDX files"):
        datasets.check_available("fashion_mnist", "train", data_dir=str(tmp_path))
    with pytest.raises(datasets.DatasetError, match=r"lsun_crop/test: no path given"):
        datasets.check_available("lsun_crop", "test")
    with pytest.raises(datasets.DatasetError, match=r"isun/test: .* does not exist \(config "
                                                    r"dataset_paths\.isun\)"):
        datasets.check_available("isun", "test", path=str(tmp_path / "iSUN"))
    (tmp_path / "iSUN").mkdir()
    with pytest.raises(datasets.DatasetError, match=r"isun/test: folder .* holds no image files"):
        datasets.check_available("isun", "test", path=str(tmp_path / "iSUN"))
    # A file named as an image is enough: its pixels are read when the set is loaded.
    (tmp_path / "iSUN" / "a.png").write_bytes(b"")
    datasets.check_available("isun", "test", path=str(tmp_path / "iSUN"))
    for name in ("gaussian", "digits", "flower_patches"):  # generated or shipped: always there
        datasets.check_available(name, "test")
    with pytest.raises(datasets.DatasetError, match="unknown dataset"):
        datasets.check_available("nope", "test")


def test_local_sources_fail_clearly(tmp_path):
    with pytest.raises(datasets.DatasetError,
                       match=r"lsun_crop/test: no path given; .*dataset_paths\.lsun_crop"):
        datasets.load("lsun_crop", "test")
    missing = tmp_path / "nowhere" / "LSUN"
    with pytest.raises(datasets.DatasetError, match=f"isun/test: path {missing} does not exist"):
        datasets.load("isun", "test", path=str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(datasets.DatasetError, match=r"tinyimagenet_crop/test: folder .* no image"):
        datasets.load("tinyimagenet_crop", "test", path=str(tmp_path / "empty"))
    np.save(tmp_path / "floats.npy", np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(datasets.DatasetError, match=r"random_300k/train: .* float32 images"):
        datasets.load("random_300k", "train", path=str(tmp_path / "floats.npy"))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(datasets.DatasetError, match="random_300k/train: cannot read"):
        datasets.load("random_300k", "train", path=str(tmp_path / "broken.npy"))
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(datasets.DatasetError, match="neither a folder"):
        datasets.load("local_images", "test", path=str(tmp_path / "data.csv"))


# ---------------------------------------------------------------------------------------------
# synthetic sets


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_sets_are_seeded_and_reproducible(name):
    a = datasets.load(name, "test", num_examples=64, seed=1)
    _check(a, 64, (32, 32, 3))
    assert (a.labels == -1).all()
    np.testing.assert_array_equal(a.images, datasets.load(name, "test", num_examples=64,
                                                          seed=1).images)
    assert not np.array_equal(a.images, datasets.load(name, "test", num_examples=64,
                                                      seed=2).images)
    assert not np.array_equal(a.images, datasets.load(name, "train", num_examples=64,
                                                      seed=1).images)
    assert len(datasets.load(name, "test", image_shape=(28, 28, 1))) == 2000  # default size


def test_synthetic_sets_have_their_documented_statistics():
    x = datasets.load("gaussian", "test", num_examples=300).images.astype(np.float64)
    assert x.mean() == pytest.approx(127.5, abs=0.5)
    assert x.std() == pytest.approx(61.1, abs=0.5)
    assert ((x == 0) | (x == 255)).mean() == pytest.approx(0.0455 + 0.001, abs=0.003)

    x = datasets.load("rademacher", "test", num_examples=300).images
    assert set(np.unique(x).tolist()) == {0, 255}
    assert (x == 255).mean() == pytest.approx(0.5, abs=0.005)

    x = datasets.load("uniform", "test", num_examples=300).images.astype(np.float64)
    assert x.mean() == pytest.approx(127.5, abs=0.5)
    assert x.std() == pytest.approx(255 / np.sqrt(12), abs=0.5)

    x = datasets.load("blobs", "test", num_examples=300).images
    assert ((x == 0) | (x >= 191)).all()
    assert (x > 0).mean() == pytest.approx(0.21, abs=0.02)
    x = datasets.load("blobs", "test", num_examples=300, image_shape=(28, 28, 1)).images
    assert (x > 0).mean() == pytest.approx(0.31, abs=0.02)


def test_blobs_follow_the_reference_construction_image_by_image():
    """The reference blurs one HWC image at a time over all three axes; the batched filter must
    give the same images."""
    rng = np.random.default_rng(4)
    ours = synthetic.generate(synthetic.blobs, 5, (32, 32, 3), np.random.default_rng(4))
    bits = rng.binomial(1, 0.7, size=(5, 32, 32, 3)).astype(np.float32)
    for i in range(5):
        blurred = ndimage.gaussian_filter(bits[i], sigma=1.5, mode="nearest", truncate=4.0)
        blurred[blurred < 0.75] = 0
        np.testing.assert_array_equal(ours[i], np.rint(blurred * 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# embedded sets


def test_digits_splits_shapes_and_constants():
    from sklearn.datasets import load_digits

    train, test = datasets.load("digits", "train"), datasets.load("digits", "test")
    _check(train, 1347, (8, 8, 1))
    _check(test, 450, (8, 8, 1))
    reference = load_digits()
    np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), reference.target)
    np.testing.assert_array_equal(test.images[..., 0],
                                  np.rint(reference.images[1347:] * 255 / 16).astype(np.uint8))
    assert np.bincount(test.labels).min() >= 41
    for name, split in (("digits", train), ("digits28", datasets.load("digits28", "train"))):
        info = datasets.info(name)
        assert split.images.shape[1:] == info.image_shape
        assert split.images.mean() / 255 == pytest.approx(info.mean[0], abs=1e-4)
        assert split.images.std() / 255 == pytest.approx(info.std[0], abs=1e-4)
    digits28 = datasets.load("digits28", "test")
    _check(digits28, 450, (28, 28, 1))
    np.testing.assert_array_equal(digits28.labels, test.labels)
    subset = datasets.load("digits", "train", num_examples=100, seed=7)
    _check(subset, 100, (8, 8, 1))


def _digests(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(im.tobytes()).digest() for im in images}


def test_photo_patches_are_reproducible_and_china_flower_disjoint():
    china = datasets.load("china_patches", "train", num_examples=300)
    flower = datasets.load("flower_patches", "test", num_examples=300)
    _check(china, 300, (32, 32, 3))
    _check(flower, 300, (32, 32, 3))
    assert (china.labels == -1).all()
    np.testing.assert_array_equal(
        china.images, datasets.load("china_patches", "train", num_examples=300).images)
    assert not _digests(china.images) & _digests(flower.images)
    # The two photographs differ in colour, so the sets are far apart, not just unequal bytes.
    assert abs(china.images.mean() - flower.images.mean()) > 30
    assert len(datasets.load("china_patches", "train")) == 10_000
    gray = datasets.load("flower_patches", "test", num_examples=5, image_shape=(28, 28, 1))
    _check(gray, 5, (28, 28, 1))


# ---------------------------------------------------------------------------------------------
# conversions


def test_conversions_match_pil_and_torchvision_rules():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (427, 640, 3), dtype=np.uint8)
    # Resize(32) + CenterCrop(32): shorter side to 32, longer to int(32 * 640 / 427) = 47.
    scaled = np.asarray(Image.fromarray(rgb).resize((47, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(image_lib.fit(rgb, (32, 32, 3)), scaled[:, 8:40])
    gray = image_lib.fit(rgb, (427, 640, 1))
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    small = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(image_lib.fit(small, (8, 8, 3)), np.repeat(small, 3, axis=-1))
