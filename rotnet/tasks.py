"""LightningModules: rotation prediction (pretext), digit classification (semi, baseline) and
classification that also learns from unlabeled images (selftrain)."""
import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from rotnet.data import rotate_four
from rotnet.nin import NIN, PooledLinear

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("cosine", "constant")


class NonFiniteLossError(ArithmeticError):
    pass


class _Task(L.LightningModule):
    """Backbone + one pooled linear head, trained with cross-entropy; one accuracy per split."""

    n_classes: int

    def __init__(self, optimizer, lr, momentum, nesterov, weight_decay, schedule, channels_last, feature_block=3):
        super().__init__()
        self.feature_block = feature_block  # the head reads this block's output
        self.backbone = NIN()
        self.head = PooledLinear(self.backbone.out_channels[feature_block - 1], self.n_classes)
        self.train_acc = MulticlassAccuracy(self.n_classes, average="micro")
        self.val_acc = MulticlassAccuracy(self.n_classes, average="micro")
        self.test_acc = MulticlassAccuracy(self.n_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(self.n_classes)
        self.test_examples: dict[str, torch.Tensor] = {}  # a few test images with predictions, for plots
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(x, self.feature_block))

    def _step(self, batch, split: str, logits: torch.Tensor | None = None) -> torch.Tensor:
        x, y = batch
        logits = self(x) if logits is None else logits
        loss = F.cross_entropy(logits.float(), y)
        training = split == "train"
        if training and not torch.isfinite(loss):
            raise NonFiniteLossError(f"the training loss became {loss.item()} at step {self.global_step}")
        acc = getattr(self, f"{split}_acc")
        acc(logits, y)
        self.log(f"{split}/loss", loss, on_step=training, on_epoch=True, prog_bar=training, sync_dist=not training, batch_size=len(y))
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.test_confusion.update(logits, y)
        if batch_idx == 0:
            # Evenly spaced samples: a rotation batch holds each rotation in its own quarter.
            pick = torch.linspace(0, len(y) - 1, min(64, len(y)), device=y.device).long()
            self.test_examples = {"x": x[pick].float().cpu(), "pred": logits[pick].argmax(1).cpu(), "y": y[pick].cpu()}
        self._step(batch, "test", logits)

    def on_test_epoch_end(self):
        # Computed here, on every rank (the reduction is collective), for the plots rank 0 draws.
        self.test_confusion_matrix = self.test_confusion.compute().cpu()

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def configure_optimizers(self):
        hp = self.hparams
        params = self.param_groups(hp.lr)
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay)
        else:
            opt = OPTIMIZERS[hp.optimizer](params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.schedule == "constant":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class RotationTask(_Task):
    """Predict which of 0/90/180/270 degrees an image was rotated by (labels from the DataModule)."""

    n_classes = 4

    def __init__(self, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                 schedule="cosine", channels_last=True):
        super().__init__(optimizer, lr, momentum, nesterov, weight_decay, schedule, channels_last)
        self.save_hyperparameters()


class ClassifierTask(_Task):
    """Ten-way digit classifier; the first ``freeze_blocks`` blocks stay fixed, BatchNorm included."""

    n_classes = 10

    def __init__(self, freeze_blocks=0, optimizer="adam", lr=1e-3, momentum=0.9, nesterov=False,
                 weight_decay=5e-4, schedule="cosine", channels_last=True, backbone_lr_scale=1.0, feature_block=3):
        super().__init__(optimizer, lr, momentum, nesterov, weight_decay, schedule, channels_last, feature_block)
        self.save_hyperparameters()
        for block in self.frozen_blocks():
            block.requires_grad_(False)
        self.train()  # Lightning keeps the modes modules already have, so set them from the start

    def param_groups(self, lr: float) -> list[dict]:
        # Pretrained blocks that are fine-tuned can learn more slowly than the new head.
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        return groups + ([{"params": backbone, "lr": lr * self.hparams.backbone_lr_scale}] if backbone else [])

    def frozen_blocks(self):
        return list(self.backbone.blocks[: self.hparams.freeze_blocks])

    def train(self, mode: bool = True):
        # Frozen blocks must keep using (and never update) the BatchNorm statistics they were
        # pretrained with, whoever switches the module to train mode.
        super().train(mode)
        for block in self.frozen_blocks():
            block.eval()
        return self


class SelfTrainTask(ClassifierTask):
    """A classifier that learns from the labeled batch and, at the same time, from the unlabeled pool.

    Unlabeled images: the prediction on a weak view, where at least ``threshold`` confident,
    becomes the target for the student's view (FixMatch-style consistency; the DataModule makes
    the views). ``rotation_weight`` > 0 adds the rotation task on the weak views (S4L).
    """

    def __init__(self, threshold=0.95, unlabeled_weight=1.0, rotation_weight=0.0, freeze_blocks=0,
                 optimizer="adam", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=0.0, schedule="cosine",
                 channels_last=True, backbone_lr_scale=1.0):
        super().__init__(freeze_blocks, optimizer, lr, momentum, nesterov, weight_decay, schedule, channels_last,
                         backbone_lr_scale)
        self.save_hyperparameters()
        self.rotation_head = PooledLinear(self.backbone.out_channels[-1], 4) if rotation_weight > 0 else None

    def training_step(self, batch, batch_idx):
        x_labeled, y_labeled, weak, student = batch
        hp = self.hparams
        with torch.no_grad():
            confidence, pseudo = self(weak).float().softmax(1).max(1)
        confident = (confidence >= hp.threshold).float()
        logits = self(torch.cat([x_labeled, student]))
        loss = self._step((x_labeled, y_labeled), "train", logits[: len(x_labeled)])
        unlabeled = F.cross_entropy(logits[len(x_labeled):].float(), pseudo, reduction="none")
        loss = loss + hp.unlabeled_weight * (unlabeled * confident).mean()
        if self.rotation_head is not None:  # all four rotations of a quarter of the unlabeled batch
            rotated, angle = rotate_four(weak[: max(1, len(weak) // 4)])
            if hp.channels_last:
                rotated = rotated.contiguous(memory_format=torch.channels_last)
            rotation = F.cross_entropy(self.rotation_head(self.backbone(rotated)).float(), angle)
            loss = loss + hp.rotation_weight * rotation
            self.log("train/rotation_loss", rotation, on_step=False, on_epoch=True, batch_size=len(angle))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the training loss became {loss.item()} at step {self.global_step}")
        self.log("train/confident", confident.mean(), on_step=False, on_epoch=True, batch_size=len(weak))
        self.log("train/total_loss", loss, on_step=True, on_epoch=True, batch_size=len(weak))
        return loss

    def param_groups(self, lr: float) -> list[dict]:
        groups = super().param_groups(lr)
        if self.rotation_head is not None:
            groups[0]["params"] += list(self.rotation_head.parameters())
        return groups
