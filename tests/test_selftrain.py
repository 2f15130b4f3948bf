"""stage=selftrain: paired batches, the two views, the start checkpoint, and pseudo-labels only where confident."""
from types import SimpleNamespace

import pytest
import torch

from conftest import make_cfg
from rotnet.data import MEAN, STD, MNISTDataModule, PairedBatches, cutout, random_affine
from rotnet.errors import RotnetError
from rotnet.handoff import load_start
from rotnet.run import run
from rotnet.tasks import SelfTrainTask


def test_paired_batches_cover_the_pool_once_and_cycle_the_labeled_set():
    sampler = PairedBatches(n_labeled=7, labeled_batch_size=4, n=23, batch_size=5, seed=0)
    pairs = list(sampler)
    assert len(pairs) == len(sampler) == 5
    assert sorted(torch.cat([p for _, p in pairs]).tolist()) == list(range(23))
    labeled = torch.cat([lab for lab, _ in pairs])
    assert all(len(lab) == 4 for lab, _ in pairs)
    assert sorted(labeled[:7].tolist()) == list(range(7))  # each pass is a permutation of the labeled set
    assert sorted(labeled[7:14].tolist()) == list(range(7))
    skipped = PairedBatches(7, 4, 23, 5, seed=0, skip=lambda: 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(list(skipped), pairs[2:]))


def test_cutout_blanks_one_square_per_image():
    x = torch.ones(50, 1, 28, 28)
    out = cutout(x, 10)
    blank = (out == 0).squeeze(1)
    for mask in blank:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 5 <= len(rows) <= 10 and 5 <= len(cols) <= 10  # a 10 x 10 square, clipped at the border
        assert mask.sum() == len(rows) * len(cols)  # a rectangle, nothing else
    assert torch.equal(cutout(x, 0), x)


def test_random_affine_zoom():
    x = torch.zeros(1, 1, 28, 28)
    x[..., 10:18, 10:18] = 1.0
    same = random_affine(x, 0.0, 0.0, scale=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    zoomed = random_affine(x.expand(200, -1, -1, -1), 0.0, 0.0, torch.Generator().manual_seed(0), scale=0.3)
    mass = zoomed.sum((1, 2, 3))
    assert mass.min() < 0.85 * x.sum() and mass.max() > 1.15 * x.sum()


def selftrain_batch(mnist_dir, view):
    dm = MNISTDataModule(dir=str(mnist_dir), download=False, labels_per_class=5, task="selftrain", batch_size=8,
                         unlabeled_batch_size=16, student_view=view, seed=0)
    dm.setup()
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1, global_step=0, current_epoch=0,
                                 num_training_batches=float("inf"))
    raw = next(iter(dm.train_dataloader()))
    return dm, raw, dm.on_after_batch_transfer(raw, 0)


def test_selftrain_batches_pair_labeled_images_with_two_views_of_the_pool(mnist_dir):
    dm, raw, (x, y, weak, student) = selftrain_batch(mnist_dir, "strong")
    assert x.shape == (8, 1, 28, 28) and y.dtype == torch.long and weak.shape == student.shape == (16, 1, 28, 28)
    assert len(dm.train_set) == len(dm.pool_train) + len(dm.pool_val)  # the whole pool, no labels
    labeled = {bytes(img.numpy()) for img in dm.train_set.labeled_x}
    assert not labeled & {bytes(img.numpy()) for img in dm.train_set.pool_x}
    def blank(v):
        return torch.isclose(v, torch.tensor((0 - MEAN) / STD)).flatten(1).sum(1)

    assert (blank(student) > blank(weak)).float().mean() > 0.5  # cutout adds blank pixels
    _, _, (_, _, weak, student) = selftrain_batch(mnist_dir, "same")
    assert torch.equal(weak, student)
    _, _, (_, _, weak, student) = selftrain_batch(mnist_dir, "weak")
    assert not torch.equal(weak, student)


@pytest.mark.parametrize("threshold, learns_from_pool", [(1.0, False), (0.0, True)])
def test_unlabeled_images_teach_only_where_the_prediction_is_confident(threshold, learns_from_pool):
    torch.manual_seed(0)
    module = SelfTrainTask(threshold=threshold, channels_last=False).eval()  # BatchNorm off: rows independent
    module.log = lambda *args, **kwargs: None
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    weak, student = torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28, requires_grad=True)
    module.training_step((x, y, weak, student), 0).backward()
    assert (student.grad.abs().sum() > 0) == learns_from_pool


def test_selftrain_starts_from_a_classifier_or_a_pretext_checkpoint(pretext_ckpt, tmp_path):
    ckpt = torch.load(pretext_ckpt, map_location="cpu", weights_only=True)
    head = {"head.2.weight": torch.randn(10, 192), "head.2.bias": torch.randn(10)}
    torch.save(dict(ckpt, state_dict=dict(ckpt["state_dict"], **head)), tmp_path / "classifier.ckpt")
    from_classifier = SelfTrainTask()
    load_start(from_classifier, str(tmp_path / "classifier.ckpt"))
    assert torch.equal(from_classifier.head[2].weight, head["head.2.weight"])
    from_pretext = SelfTrainTask()
    fresh_head = from_pretext.head[2].weight.clone()
    load_start(from_pretext, str(pretext_ckpt))
    key = "backbone.blocks.1.0.0.weight"
    assert torch.equal(from_pretext.state_dict()[key], ckpt["state_dict"][key])
    assert torch.equal(from_pretext.head[2].weight, fresh_head)
    with pytest.raises(RotnetError, match="needs a checkpoint to start from"):
        load_start(SelfTrainTask(), None)


def test_selftrain_stage_with_the_rotation_task(mnist_dir, pretext_ckpt, tmp_path):
    results = run(make_cfg(mnist_dir, tmp_path, "stage=selftrain", f"pretrained={pretext_ckpt}", "trainer.max_epochs=1",
                           "selftrain.unlabeled_batch_size=16", "selftrain.rotation_weight=1.0"))["selftrain"]
    assert results["pretrained"] == str(pretext_ckpt) and results["steps"] == 9  # ceil(140 pool images / 16)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/confident", "train/rotation_loss", "val/acc", "test/acc"} <= set(header)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["rotation_head.2.weight"].shape == (4, 192)
