import os
import stat

import numpy as np
import pytest
import torch

from conftest import N_TRAIN, synthetic_mnist, write_idx, write_mnist
from rotnet.data import MNISTDataModule, draw_labeled, rotate_four, split_pool
from rotnet.mnist_files import FILES, MNISTFileError, load_mnist


def test_rotation_labels_match_rot90_k():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    rotated, labels = rotate_four(x)
    assert rotated.shape == (8, 1, 28, 28)
    for img, k in zip(rotated, labels.tolist()):
        assert any(torch.equal(img, torch.rot90(x[i], k, dims=(-2, -1))) for i in range(2))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not torch.equal(rotated[0], rotated[2])


def test_labeled_draw_balanced_seeded_and_first():
    _, labels = synthetic_mnist(N_TRAIN, 0)
    labels = torch.from_numpy(labels)
    a = draw_labeled(labels, 5, "random", seed=0)
    assert torch.equal(a, draw_labeled(labels, 5, "random", seed=0))
    assert not torch.equal(a, draw_labeled(labels, 5, "random", seed=1))
    assert torch.bincount(labels[a], minlength=10).tolist() == [5] * 10
    first = draw_labeled(labels, 3, "first", seed=7)
    for c in range(10):
        expected = torch.nonzero(labels == c).flatten()[:3]
        assert set(first.tolist()) >= set(expected.tolist())
    assert len(first) == 30


def test_pool_disjoint_from_labels_and_split_by_image():
    labeled = torch.tensor([0, 5, 17])
    train, val = split_pool(100, labeled, None, 0.2, seed=0)
    assert len(train) + len(val) == 97 and len(val) == 19
    assert not set(train.tolist()) & set(val.tolist())
    assert not (set(train.tolist()) | set(val.tolist())) & set(labeled.tolist())
    capped_train, capped_val = split_pool(100, labeled, 50, 0.2, seed=0)
    assert len(capped_train) + len(capped_val) == 50


def test_rotation_batches_keep_an_image_on_one_side(mnist_dir):
    dm = MNISTDataModule(dir=str(mnist_dir), download=False, labels_per_class=5, task="rotation", seed=3)
    dm.setup()
    train_imgs = {bytes(img.numpy()) for img in dm.train_set.tensors[0]}
    val_imgs = {bytes(img.numpy()) for img in dm.val_set.tensors[0]}
    assert len(train_imgs) == len(dm.pool_train) and len(val_imgs) == len(dm.pool_val)
    assert not train_imgs & val_imgs
    (batch,) = next(iter(dm.train_dataloader()))
    x, y = dm.on_after_batch_transfer((batch,), 0)
    assert x.shape[0] == 4 * batch.shape[0] and y.tolist() == sorted(y.tolist())
    assert torch.bincount(y).tolist() == [batch.shape[0]] * 4


def test_labeled_datamodule_is_disjoint_and_balanced(mnist_dir):
    dm = MNISTDataModule(dir=str(mnist_dir), download=False, labels_per_class=4, task="classification", seed=1)
    dm.setup()
    labeled = set(dm.labeled_indices.tolist())
    assert len(labeled) == 40
    assert not labeled & (set(dm.pool_train.tolist()) | set(dm.pool_val.tolist()))
    assert torch.bincount(dm.train_set.tensors[1], minlength=10).tolist() == [4] * 10


def test_reads_flat_gz_plain_and_torchvision_layout(tmp_path):
    flat = load_mnist(write_mnist(tmp_path / "flat", gz_train=True, gz_test=False), allow_download=False)
    raw = load_mnist(write_mnist(tmp_path / "tv" / "MNIST" / "raw", gz_train=False, gz_test=True).parents[1], False)
    assert flat["train_images"].shape == (N_TRAIN, 28, 28) and flat["train_images"].dtype == torch.uint8
    for key in FILES:
        assert torch.equal(flat[key], raw[key])


def test_read_only_data_dir_works(tmp_path):
    folder = write_mnist(tmp_path / "ro")
    for f in folder.iterdir():
        f.chmod(stat.S_IRUSR)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        dm = MNISTDataModule(dir=str(folder), download=True, task="classification")
        dm.setup()
        assert len(dm.test_set) == 60
        assert sorted(os.listdir(folder)) == sorted(f.name for f in folder.iterdir())
    finally:
        folder.chmod(stat.S_IRWXU)


def test_missing_files_name_folder_and_files(tmp_path):
    with pytest.raises(MNISTFileError) as err:
        load_mnist(tmp_path, allow_download=False)
    msg = str(err.value)
    assert str(tmp_path) in msg and all(name in msg for name in FILES.values())


@pytest.mark.parametrize("damage", ["truncated", "magic", "counts"])
def test_damaged_files_are_named(tmp_path, damage):
    folder = write_mnist(tmp_path / "d", gz_train=False)
    target = folder / "train-images-idx3-ubyte"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "magic":
        raw = bytearray(target.read_bytes())
        raw[3] = 1
        target.write_bytes(bytes(raw))
    else:
        images, _ = synthetic_mnist(N_TRAIN - 10, 0)
        write_idx(target, images, gz=False)
    with pytest.raises(MNISTFileError, match="train-images-idx3-ubyte"):
        load_mnist(folder, allow_download=False)


def test_index_batches_cover_everything_once_and_shard():
    from rotnet.data import IndexBatches

    sampler = IndexBatches(23, 5, shuffle=True, seed=0)
    seen = torch.cat(list(sampler))
    assert sorted(seen.tolist()) == list(range(23)) and len(sampler) == 5
    sampler.set_epoch(1)
    assert not torch.equal(torch.cat(list(sampler)), seen)
    shards = [torch.cat(list(IndexBatches(23, 5, True, 0, rank=r, world_size=2))) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == list(range(23))
