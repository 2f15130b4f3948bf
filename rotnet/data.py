"""MNIST held as uint8 tensors: the labeled draw, the unlabeled pool, and batches of index slices.

Rotations (pretext) and augmentation (labeled training, and the weak and strong views of
unlabeled images for self-training) are made per batch, after the batch has been moved to the
model's device, in ``on_after_batch_transfer``.
"""
import math
from functools import lru_cache

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from rotnet.errors import RotnetError
from rotnet.mnist_files import load_mnist

MEAN, STD = 0.1307, 0.3081
SELECTIONS = ("random", "first")
STUDENT_VIEWS = ("strong", "weak", "same")  # selftrain: what the student sees of an unlabeled image


def draw_labeled(labels: torch.Tensor, per_class: int, selection: str, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of each class: the first ones in file order, or a seeded draw."""
    counts = torch.bincount(labels)
    if per_class >= int(counts.min()):
        raise RotnetError(
            f"data.labels_per_class={per_class} is too many: the smallest class (digit {int(counts.argmin())}) has "
            f"{int(counts.min())} training images, and each class must keep at least one unlabeled image. "
            f"Use data.labels_per_class between 1 and {int(counts.min()) - 1}."
        )
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(counts)):
        idx = torch.nonzero(labels == c).flatten()
        if selection == "random":
            idx = idx[torch.randperm(len(idx), generator=g)]
        chosen.append(idx[:per_class])
    return torch.cat(chosen).sort().values


def split_pool(n_train: int, labeled: torch.Tensor, num_unlabeled: int | None, val_fraction: float, seed: int):
    """Unlabeled pool (everything not labeled, optionally capped), split by image into train/val."""
    mask = torch.ones(n_train, dtype=torch.bool)
    mask[labeled] = False
    pool = torch.nonzero(mask).flatten()
    g = torch.Generator().manual_seed(seed + 1)
    pool = pool[torch.randperm(len(pool), generator=g)]
    if num_unlabeled is not None:
        if num_unlabeled > len(pool):
            raise RotnetError(
                f"data.num_unlabeled={num_unlabeled} is larger than the unlabeled pool ({len(pool)} images once "
                f"the labeled draw is taken out). Use a value between 2 and {len(pool)}, or null for all of it."
            )
        pool = pool[:num_unlabeled]
    n_val = round(val_fraction * len(pool))
    if not 0 < n_val < len(pool):
        raise RotnetError(
            f"data.val_fraction={val_fraction} of a pool of {len(pool)} images leaves {n_val} for validation and "
            f"{len(pool) - n_val} for training; both need at least one. Enlarge data.num_unlabeled or change "
            f"data.val_fraction."
        )
    return pool[n_val:].sort().values, pool[:n_val].sort().values


def rotate_four(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image in all four rotations; label k means ``torch.rot90(image, k, dims=(-2, -1))``."""
    rotated = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return rotated, labels


def random_affine(x: torch.Tensor, shift: float, degrees: float, generator: torch.Generator | None = None,
                  scale: float = 0.0) -> torch.Tensor:
    """Per-image random shift (pixels), rotation (degrees) and zoom (1 ± scale), for a whole batch at once."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * math.radians(degrees)
    t = torch.rand(n, 2, device=x.device, generator=generator) * 2 - 1
    t = t * (2 * shift / torch.tensor([w, h], device=x.device))
    zoom = 1 + (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blank one ``size`` x ``size`` square (clipped at the border) at a random place in each image."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    centre = torch.rand(n, 2, device=x.device, generator=generator) * torch.tensor([h, w], device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=x.device).view(1, 1, w) + 0.5
    box = ((ys - centre[:, 0, None, None]).abs() < size / 2) & ((xs - centre[:, 1, None, None]).abs() < size / 2)
    return x.masked_fill(box.unsqueeze(1), 0.0)


class TensorSlices(torch.utils.data.Dataset):
    """``dataset[index_tensor]`` returns the rows of every tensor at once: one batch, no collation."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors[0])

    def __getitem__(self, idx):
        return tuple(t[idx] for t in self.tensors)


class IndexBatches(torch.utils.data.Sampler):
    """Batches of indices, reshuffled each epoch from (seed, epoch) and sharded across ranks.

    ``skip`` (asked at each epoch's first batch) gives how many batches of this epoch were already
    trained, so a run resumed from a mid-epoch checkpoint sees exactly the batches it missed.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 skip=None):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.epoch, self.skip = rank, world_size, 0, skip

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _indices(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return order[self.rank :: self.world_size]

    def __len__(self):
        return math.ceil(len(range(self.rank, self.n, self.world_size)) / self.batch_size)

    def __iter__(self):
        # A generator, so that ``skip`` is asked at the first batch, once Lightning has restored its loops.
        batches = self._indices().split(self.batch_size)
        yield from batches[self.skip() if self.skip else 0 :]


class PairedSlices(torch.utils.data.Dataset):
    """``dataset[(labeled_idx, pool_idx)]`` returns a labeled batch and an unlabeled batch at once."""

    def __init__(self, labeled_x: torch.Tensor, labeled_y: torch.Tensor, pool_x: torch.Tensor):
        self.labeled_x, self.labeled_y, self.pool_x = labeled_x, labeled_y, pool_x

    def __len__(self):
        return len(self.pool_x)

    def __getitem__(self, idx):
        labeled, pool = idx
        return self.labeled_x[labeled], self.labeled_y[labeled], self.pool_x[pool]


class PairedBatches(IndexBatches):
    """Pool batches as in ``IndexBatches``, each paired with a batch of labeled indices that cycles
    through the labeled set, reshuffled at every pass (so any labeled batch size works)."""

    def __init__(self, n_labeled: int, labeled_batch_size: int, n: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, skip=None):
        super().__init__(n, batch_size, True, seed, rank, world_size, skip)
        self.n_labeled, self.labeled_batch_size = n_labeled, labeled_batch_size

    def __iter__(self):
        pool = self._indices().split(self.batch_size)
        g = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 64 + self.rank + 1)
        needed = len(pool) * self.labeled_batch_size
        passes = [torch.randperm(self.n_labeled, generator=g) for _ in range(math.ceil(needed / self.n_labeled))]
        labeled = torch.cat(passes)[:needed].split(self.labeled_batch_size)
        start = self.skip() if self.skip else 0
        yield from zip(labeled[start:], pool[start:])


@lru_cache(maxsize=2)
def _load(folder: str, allow_download: bool):
    return load_mnist(folder, allow_download)


class MNISTDataModule(L.LightningDataModule):
    """Serves rotated unlabeled images (task="rotation"), the labeled subset (task="classification"),
    or labeled batches paired with two views of unlabeled batches (task="selftrain")."""

    def __init__(
        self,
        dir: str = "data",
        download: bool = True,
        labels_per_class: int = 10,
        label_selection: str = "random",
        num_unlabeled: int | None = None,
        val_fraction: float = 0.2,
        monitor_size: int = 1000,
        augment_shift: float = 2.0,
        augment_degrees: float = 10.0,
        strong_shift: float = 3.0,
        strong_degrees: float = 25.0,
        strong_scale: float = 0.15,
        strong_cutout: int = 10,
        eval_batch_size: int = 512,
        task: str = "rotation",
        batch_size: int = 64,
        unlabeled_batch_size: int = 64,
        student_view: str = "strong",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.task = task
        self.labeled_indices: torch.Tensor | None = None
        self._augment_rng: torch.Generator | None = None
        self._augment_rng_state: torch.Tensor | None = None  # from a checkpoint, applied on first use

    def prepare_data(self):
        _load(self.hparams.dir, self.hparams.download)

    def setup(self, stage: str | None = None):
        if self.labeled_indices is not None:
            return
        hp = self.hparams
        data = _load(hp.dir, hp.download)
        train_x, train_y = data["train_images"], data["train_labels"]
        self.labeled_indices = draw_labeled(train_y, hp.labels_per_class, hp.label_selection, hp.seed)
        if self.trainer is not None and self.trainer.world_size > 1:
            first = self.trainer.strategy.broadcast(self.labeled_indices, src=0)
            if not torch.equal(first, self.labeled_indices):
                raise RotnetError(
                    f"rank {self.trainer.global_rank} drew other labeled images than rank 0: every rank must "
                    "read the same MNIST files with the same data.* settings and seed."
                )
        self.pool_train, self.pool_val = split_pool(
            len(train_y), self.labeled_indices, hp.num_unlabeled, hp.val_fraction, hp.seed
        )
        if self.task == "rotation":
            self.train_set = TensorSlices(train_x[self.pool_train].unsqueeze(1))
            self.val_set = TensorSlices(train_x[self.pool_val].unsqueeze(1))
            self.test_set = TensorSlices(data["test_images"].unsqueeze(1))
        else:
            lab = self.labeled_indices
            monitor = torch.cat([self.pool_val, self.pool_train])[: hp.monitor_size]
            if self.task == "selftrain":  # the whole pool, validation share included: no labels are read
                pool = torch.cat([self.pool_train, self.pool_val]).sort().values
                self.train_set = PairedSlices(train_x[lab].unsqueeze(1), train_y[lab].long(), train_x[pool].unsqueeze(1))
            else:
                self.train_set = TensorSlices(train_x[lab].unsqueeze(1), train_y[lab].long())
            self.val_set = TensorSlices(train_x[monitor].unsqueeze(1), train_y[monitor].long())
            self.test_set = TensorSlices(data["test_images"].unsqueeze(1), data["test_labels"].long())

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset, batch_size: int, shuffle: bool, skip=None) -> DataLoader:
        sampler = IndexBatches(len(dataset), batch_size, shuffle, self.hparams.seed, *self._rank_world(), skip)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self):
        if self.task != "selftrain":
            return self._loader(self.train_set, self.hparams.batch_size, shuffle=True, skip=self._batches_done)
        sampler = PairedBatches(len(self.train_set.labeled_x), self.hparams.batch_size, len(self.train_set),
                                self.hparams.unlabeled_batch_size, self.hparams.seed, *self._rank_world(),
                                self._batches_done)
        return DataLoader(self.train_set, sampler=sampler, batch_size=None, num_workers=0)

    def val_dataloader(self):
        return self._loader(self.val_set, self._eval_batch(), shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_set, self._eval_batch(), shuffle=False)

    def _eval_batch(self) -> int:
        # A rotation batch becomes four times larger on the device.
        return max(1, self.hparams.eval_batch_size // (4 if self.task == "rotation" else 1))

    def _batches_done(self) -> int:
        """Batches of the current epoch already trained: non-zero only right after a mid-epoch resume."""
        trainer = self.trainer
        if trainer is None or not isinstance(trainer.num_training_batches, int):
            return 0
        return max(0, trainer.global_step - trainer.current_epoch * trainer.num_training_batches)

    def state_dict(self):
        return {"augment_rng": self._augment_rng.get_state() if self._augment_rng is not None else None}

    def load_state_dict(self, state):
        self._augment_rng_state = state.get("augment_rng")

    def _augmentation_rng(self, device: torch.device) -> torch.Generator:
        if self._augment_rng is None:
            self._augment_rng = torch.Generator(device=device).manual_seed(self.hparams.seed)
            if self._augment_rng_state is not None:
                self._augment_rng.set_state(self._augment_rng_state)
        return self._augment_rng

    def _weak(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        if hp.augment_shift <= 0 and hp.augment_degrees <= 0:
            return x
        return random_affine(x, hp.augment_shift, hp.augment_degrees, self._augmentation_rng(x.device))

    def _strong(self, x: torch.Tensor) -> torch.Tensor:
        hp, rng = self.hparams, self._augmentation_rng(x.device)
        x = random_affine(x, hp.strong_shift, hp.strong_degrees, rng, hp.strong_scale)
        return cutout(x, hp.strong_cutout, rng)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x = batch[0].float() / 255.0
        training = self.trainer is not None and self.trainer.training
        if self.task == "rotation":
            x, y = rotate_four(x)
        elif self.task == "selftrain" and training:
            # (labeled, its labels, the teacher's weak view of the unlabeled batch, the student's view)
            pool = batch[2].float() / 255.0
            weak = self._weak(pool)
            view = self.hparams.student_view
            student = weak if view == "same" else self._weak(pool) if view == "weak" else self._strong(pool)
            return tuple((v - MEAN) / STD if v.is_floating_point() else v
                         for v in (self._weak(x), batch[1], weak, student))
        else:
            y = batch[1]
            if training:
                x = self._weak(x)
        return (x - MEAN) / STD, y
