import lightning as L
import pytest
import torch

from rotnet.data import MNISTDataModule
from rotnet.errors import RotnetError
from rotnet.handoff import load_pretext_backbone
from rotnet.nin import NIN
from rotnet.tasks import ClassifierTask, RotationTask


def test_nin_shapes_and_size():
    net = NIN()
    feats = net.forward_features(torch.zeros(2, 1, 28, 28))
    assert [tuple(f.shape[1:]) for f in feats] == [(96, 14, 14), (192, 7, 7), (192, 7, 7)]
    n = sum(p.numel() for p in RotationTask().parameters())
    assert 0.95e6 < n < 1.05e6
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


class RecordBNMode(L.Callback):
    def __init__(self):
        self.modes = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.modes.append([b.training for b in module.backbone.blocks])


def test_frozen_blocks_stay_bit_identical_and_in_eval(mnist_dir):
    module = ClassifierTask(freeze_blocks=2, lr=1e-2)
    before = [snapshot(b) for b in module.backbone.blocks]
    dm = MNISTDataModule(dir=str(mnist_dir), download=False, task="classification", batch_size=20, eval_batch_size=64)
    record = RecordBNMode()
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[record], limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    after = [snapshot(b) for b in module.backbone.blocks]
    for i in (0, 1):  # weights and BatchNorm running statistics alike
        changed = [k for k in before[i] if not torch.equal(before[i][k], after[i][k])]
        assert not changed, f"block {i + 1} changed: {changed}"
    assert any(not torch.equal(before[2][k], after[2][k]) for k in before[2]), "block 3 did not train"
    assert record.modes and all(m == [False, False, True] for m in record.modes)
    assert all(not p.requires_grad for b in module.frozen_blocks() for p in b.parameters())


def test_pretext_weights_reach_the_semi_model(pretext_ckpt, tmp_path):
    ckpt = torch.load(pretext_ckpt, map_location="cpu", weights_only=True)
    key = "backbone.blocks.0.0.0.weight"
    semi = ClassifierTask(freeze_blocks=2)
    load_pretext_backbone(semi, str(pretext_ckpt))
    assert torch.equal(semi.backbone.blocks[0][0][0].weight, ckpt["state_dict"][key])

    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1.0
    changed = tmp_path / "changed.ckpt"
    torch.save(ckpt, changed)
    semi2 = ClassifierTask(freeze_blocks=2)
    load_pretext_backbone(semi2, str(changed))
    assert torch.equal(semi2.backbone.blocks[0][0][0].weight, semi.backbone.blocks[0][0][0].weight + 1.0)


def test_bad_pretrained_paths(pretext_ckpt, tmp_path):
    semi = ClassifierTask()
    with pytest.raises(RotnetError, match="needs a pretext checkpoint"):
        load_pretext_backbone(semi, None)
    with pytest.raises(RotnetError, match="does not exist"):
        load_pretext_backbone(semi, str(tmp_path / "nope.ckpt"))
    with pytest.raises(RotnetError, match="is a directory"):
        load_pretext_backbone(semi, str(tmp_path))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(pretext_ckpt.read_bytes()[:1000])
    with pytest.raises(RotnetError, match="truncated or corrupt"):
        load_pretext_backbone(semi, str(truncated))

    ckpt = torch.load(pretext_ckpt, map_location="cpu", weights_only=True)
    other = dict(ckpt, state_dict={k: v for k, v in ckpt["state_dict"].items() if "blocks.2" not in k})
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(RotnetError, match="another architecture"):
        load_pretext_backbone(semi, str(tmp_path / "other.ckpt"))

    classifier = dict(ckpt, state_dict=dict(ckpt["state_dict"], **{"head.2.weight": torch.zeros(10, 192)}))
    torch.save(classifier, tmp_path / "classifier.ckpt")
    with pytest.raises(RotnetError, match="10-way classifier"):
        load_pretext_backbone(semi, str(tmp_path / "classifier.ckpt"))


def test_checkpoint_reloads_from_plain_hyperparameters(pretext_ckpt):
    module = RotationTask.load_from_checkpoint(pretext_ckpt, map_location="cpu", weights_only=True)
    assert module.hparams.optimizer == "sgd" and module.n_classes == 4


def test_fine_tuned_pretrained_blocks_get_their_own_learning_rate():
    module = ClassifierTask(freeze_blocks=1, lr=1e-3, backbone_lr_scale=0.1, schedule="constant")
    head, backbone = module.param_groups(1e-3)
    assert head["lr"] == 1e-3 and backbone["lr"] == pytest.approx(1e-4)
    trunk = {id(p) for p in backbone["params"]}
    assert trunk == {id(p) for b in module.backbone.blocks[1:] for p in b.parameters()}
    assert len(ClassifierTask(freeze_blocks=3).param_groups(1e-3)) == 1  # nothing left to fine-tune


def test_test_confusion_matrix_counts_every_test_image(mnist_dir):
    dm = MNISTDataModule(dir=str(mnist_dir), download=False, task="rotation", eval_batch_size=64)
    module = RotationTask()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(module, datamodule=dm, verbose=False)
    assert module.test_confusion_matrix.shape == (4, 4)
    assert module.test_confusion_matrix.sum(1).tolist() == [60, 60, 60, 60]  # 60 test images per rotation
    assert torch.bincount(module.test_examples["y"]).tolist() == [16] * 4  # every rotation in the example grid
