"""run(cfg): build data, module and trainer for each requested stage; fit; test; write results."""
import json
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rotnet.checkpointing import AtomicCheckpointIO, SaveOnInterrupt
from rotnet.checks import check_config
from rotnet.errors import RotnetError
from rotnet.handoff import checkpoint_state, load_pretext_backbone, load_start, pretext_backbone_state, start_state
from rotnet.label_sweep import run_label_sweep, sweep_configs
from rotnet.plots import save_run_figures
from rotnet.report import results_table
from rotnet.tasks import ClassifierTask, NonFiniteLossError, RotationTask, SelfTrainTask

STAGES = ("pretext", "semi", "baseline", "selftrain")  # stage=all, in this order
PRETRAINED = ("semi", "probe", "selftrain")  # stages that start from a checkpoint
TASKS = {"pretext": "rotation", "selftrain": "selftrain"}  # the DataModule's task; the others: classification


def build_module(cfg: DictConfig, stage: str, feature_block: int = 3):
    recipe = cfg[stage]
    optim = dict(
        optimizer=recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay, schedule=recipe.schedule, channels_last=cfg.model.channels_last,
    )
    if stage == "pretext":
        return RotationTask(**optim)
    if stage == "semi":
        return ClassifierTask(freeze_blocks=cfg.model.freeze_blocks, backbone_lr_scale=cfg.model.backbone_lr_scale,
                              **optim)
    if stage == "selftrain":
        return SelfTrainTask(threshold=recipe.threshold, unlabeled_weight=recipe.unlabeled_weight,
                             rotation_weight=recipe.rotation_weight, freeze_blocks=recipe.freeze_blocks, **optim)
    if stage == "probe":  # a linear classifier on the frozen, pooled output of one pretext block
        return ClassifierTask(freeze_blocks=3, feature_block=feature_block, **optim)
    return ClassifierTask(freeze_blocks=0, **optim)


def run_stage(cfg: DictConfig, stage: str, out: Path, pretrained: str | None, feature_block: int = 3) -> dict:
    recipe = cfg[stage]
    start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    extra = dict(unlabeled_batch_size=recipe.unlabeled_batch_size, student_view=recipe.student_view) \
        if stage == "selftrain" else {}
    dm = instantiate(cfg.data, task=TASKS.get(stage, "classification"), batch_size=recipe.batch_size, seed=cfg.seed,
                     **extra)
    module = build_module(cfg, stage, feature_block)
    if stage == "selftrain":
        load_start(module, pretrained)
    elif stage in PRETRAINED:
        load_pretext_backbone(module, pretrained)
    ckpt_path = out / "checkpoints" / "last.ckpt"
    checkpoint = ModelCheckpoint(  # mid-run copies to resume from; the final weights are saved after fit
        dirpath=ckpt_path.parent, filename=ckpt_path.stem, enable_version_counter=False,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
    )
    trainer = instantiate(
        cfg.trainer,
        max_epochs=cfg.trainer.max_epochs or recipe.epochs,
        limit_train_batches=cfg.trainer.limit_train_batches or recipe.steps_per_epoch,
        check_val_every_n_epoch=recipe.val_every,
        default_root_dir=str(out),
        logger=[instantiate(logger, save_dir=str(out)) for logger in cfg.logger.values()],
        callbacks=[checkpoint, SaveOnInterrupt(ckpt_path), *_averaging(recipe)],
        plugins=[AtomicCheckpointIO()],
    )
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume)
    except NonFiniteLossError as err:
        raise RotnetError(
            f"stage={stage} stopped: {err}. Training on from there would only produce garbage. Usual fixes: "
            f"a lower {stage}.lr, trainer.gradient_clip_val=1.0, trainer.precision=32-true, or checking the "
            f"input files. The last good checkpoint, if any, is {ckpt_path}."
        ) from err
    trainer.save_checkpoint(ckpt_path)  # also under fast_dev_run, which turns the callback off
    val_acc = _metric(trainer, "val/acc")
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    results = {
        "stage": f"probe_block{feature_block}" if stage == "probe" else stage,
        "seed": cfg.seed,
        "test_acc": float(tested["test/acc"]),
        "test_loss": float(tested["test/loss"]),
        "val_acc": val_acc,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seconds": round(time.perf_counter() - start, 2),
        "labels_per_class": cfg.data.labels_per_class,
        "label_selection": cfg.data.label_selection,
        "num_unlabeled": len(dm.pool_train) + len(dm.pool_val),
        "freeze_blocks": module.hparams.get("freeze_blocks", 0),
        "precision": str(trainer.precision),
        "checkpoint": str(ckpt_path),
        "pretrained": pretrained if stage in PRETRAINED else None,
    }
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "labeled_indices.json").write_text(json.dumps(dm.labeled_indices.tolist()))
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        save_run_figures(out, stage, module)
    return results


def _averaging(recipe: DictConfig) -> list:
    """An exponential moving average of the weights, validated, tested and saved in their place."""
    decay = recipe.get("ema_decay")
    return [EMAWeightAveraging(decay=decay)] if decay else []


def _metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def check_before_training(cfg: DictConfig) -> None:
    """Fail on bad input before any stage spends time training or writes anything."""
    check_config(cfg)
    points = [point for *_, point in sweep_configs(cfg)] if cfg.stage == "label_sweep" else [cfg]
    for point in points:  # data files, label budget, pool
        instantiate(point.data, task="classification", seed=point.seed).setup()
    if cfg.stage == "selftrain":
        start_state(cfg.pretrained)
    elif cfg.stage in PRETRAINED:
        pretext_backbone_state(cfg.pretrained)
    if cfg.resume is not None:
        if cfg.stage in ("all", "probe", "label_sweep"):
            raise RotnetError(
                f"resume= works with one training run at a time, and stage={cfg.stage} makes several: rerun the "
                "interrupted stage (stage=pretext, semi or baseline) with the same overrides plus "
                "resume=<its checkpoints/last.ckpt>."
            )
        checkpoint_state(cfg.resume, "resume")


def run(cfg: DictConfig) -> dict[str, dict]:
    """Run ``cfg.stage`` (one stage, all four in order, the three block probes, or a label sweep); return each one's results."""
    check_before_training(cfg)
    out = Path(cfg.run_dir)
    writer = rank_zero_only.rank == 0  # under DDP every rank runs this; one writes the run-level files
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
    pretrained, results = cfg.pretrained, {}
    if cfg.stage == "label_sweep":
        results = run_label_sweep(cfg, out, run_stage)
    elif cfg.stage == "probe":
        for block in (1, 2, 3):
            results[f"probe_block{block}"] = run_stage(cfg, "probe", out / f"block{block}", pretrained, block)
    else:
        for stage in STAGES if cfg.stage == "all" else (cfg.stage,):
            stage_out = out / stage if cfg.stage == "all" else out
            results[stage] = run_stage(cfg, stage, stage_out, pretrained)
            if stage in ("pretext", "semi"):  # semi starts from pretext, selftrain from semi
                pretrained = results[stage]["checkpoint"]
    if cfg.stage == "all" and writer:
        table = results_table(results)
        (out / "results.md").write_text(table)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("\n" + table)
    return results
