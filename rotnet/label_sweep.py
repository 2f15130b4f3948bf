"""stage=label_sweep: one pretext model, then semi, baseline (and selftrain) at every label budget and seed."""
import copy
from pathlib import Path

from omegaconf import DictConfig

from rotnet.plots import label_curve
from rotnet.report import write_summary


def sweep_configs(cfg: DictConfig):
    """(labels per class, seed, config) for every point of the sweep."""
    for labels in cfg.label_sweep.labels_per_class:
        for seed in cfg.label_sweep.seeds:
            point = copy.deepcopy(cfg)
            point.data.labels_per_class, point.seed = labels, seed
            yield labels, seed, point


def run_label_sweep(cfg: DictConfig, out: Path, run_stage) -> dict[str, dict]:
    """``run_stage`` is rotnet.run's (passed in, as rotnet.run dispatches here)."""
    results = {}
    pretrained = cfg.pretrained
    if pretrained is None:
        results["pretext"] = run_stage(cfg, "pretext", out / "pretext", None)
        pretrained = results["pretext"]["checkpoint"]
    for labels, seed, point in sweep_configs(cfg):
        start = pretrained  # selftrain starts from this point's semi model when there is one
        for stage in cfg.label_sweep.stages:
            name = f"{stage}/labels{labels}_seed{seed}"
            results[name] = run_stage(point, stage, out / name, start if stage == "selftrain" else pretrained)
            if stage == "semi":
                start = results[name]["checkpoint"]
    _, rows = write_summary(out)
    label_curve([r for r in rows if r["stage"] in cfg.label_sweep.stages], out / "label_curve.png")
    return results
