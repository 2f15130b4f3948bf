"""Range checks on the composed config, so bad values fail before any training starts."""
from omegaconf import DictConfig

from rotnet.data import SELECTIONS, STUDENT_VIEWS
from rotnet.errors import RotnetError
from rotnet.tasks import OPTIMIZERS, SCHEDULES


def _fail(key: str, value, accepted: str):
    raise RotnetError(f"{key}={value!r} is not accepted: {key} must be {accepted}. Fix the override (or preset) that sets it.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(key: str, value):
    if not _is_number(value) or not isinstance(value, int) or value < 1:
        _fail(key, value, "a whole number >= 1")


def _at_least_zero(key: str, value):
    if not _is_number(value) or value < 0:
        _fail(key, value, "a number >= 0")


def _freeze(key: str, value):
    if not _is_number(value) or not isinstance(value, int) or not 0 <= value <= 3:
        _fail(key, value, "0, 1, 2 or 3 (how many of the three NIN blocks stay frozen)")


def check_config(cfg: DictConfig) -> None:
    data = cfg.data
    _positive_int("data.labels_per_class", data.labels_per_class)
    if data.label_selection not in SELECTIONS:
        _fail("data.label_selection", data.label_selection, " or ".join(SELECTIONS))
    if data.num_unlabeled is not None:
        _positive_int("data.num_unlabeled", data.num_unlabeled)
    if not _is_number(data.val_fraction) or not 0 < data.val_fraction < 1:
        _fail("data.val_fraction", data.val_fraction, "a number strictly between 0 and 1")
    _positive_int("data.eval_batch_size", data.eval_batch_size)
    for key in ("augment_shift", "augment_degrees", "strong_shift", "strong_degrees", "strong_scale", "strong_cutout"):
        _at_least_zero(f"data.{key}", data[key])
    if data.strong_scale >= 1:
        _fail("data.strong_scale", data.strong_scale, "a number >= 0 and < 1 (zoom between 1 - it and 1 + it)")
    _freeze("model.freeze_blocks", cfg.model.freeze_blocks)
    scale = cfg.model.backbone_lr_scale
    if not _is_number(scale) or not scale > 0:
        _fail("model.backbone_lr_scale", scale, "a factor > 0 (1.0: the same lr as the head)")
    for stage in ("pretext", "semi", "baseline", "probe", "selftrain"):
        recipe = cfg[stage]
        for key in ("epochs", "batch_size", "val_every"):
            _positive_int(f"{stage}.{key}", recipe[key])
        if recipe.steps_per_epoch is not None:
            _positive_int(f"{stage}.steps_per_epoch", recipe.steps_per_epoch)
        if not _is_number(recipe.lr) or not recipe.lr > 0:
            _fail(f"{stage}.lr", recipe.lr, "a learning rate > 0")
        if recipe.optimizer not in OPTIMIZERS:
            _fail(f"{stage}.optimizer", recipe.optimizer, " or ".join(OPTIMIZERS))
        if recipe.schedule not in SCHEDULES:
            _fail(f"{stage}.schedule", recipe.schedule, " or ".join(SCHEDULES))
    selftrain = cfg.selftrain
    _positive_int("selftrain.unlabeled_batch_size", selftrain.unlabeled_batch_size)
    _freeze("selftrain.freeze_blocks", selftrain.freeze_blocks)
    if not _is_number(selftrain.threshold) or not 0 <= selftrain.threshold <= 1:
        _fail("selftrain.threshold", selftrain.threshold, "a confidence between 0 and 1")
    _at_least_zero("selftrain.unlabeled_weight", selftrain.unlabeled_weight)
    _at_least_zero("selftrain.rotation_weight", selftrain.rotation_weight)
    if selftrain.student_view not in STUDENT_VIEWS:
        _fail("selftrain.student_view", selftrain.student_view, " or ".join(STUDENT_VIEWS))
    _positive_int("checkpoint_every_n_steps", cfg.checkpoint_every_n_steps)
    sweep = cfg.label_sweep
    if not sweep.labels_per_class or not sweep.seeds:
        _fail("label_sweep.labels_per_class/seeds", "[]", "non-empty lists")
    for labels in sweep.labels_per_class:
        _positive_int("label_sweep.labels_per_class", labels)
    if not set(sweep.stages) <= {"semi", "baseline", "selftrain"} or not sweep.stages:
        _fail("label_sweep.stages", list(sweep.stages), "a non-empty list of semi, baseline and/or selftrain")
    if cfg.trainer.max_epochs is not None:
        _positive_int("trainer.max_epochs", cfg.trainer.max_epochs)
