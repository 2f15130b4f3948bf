import json
import statistics

import pytest
from omegaconf import OmegaConf

from rotnet import report


def fake_run(folder, stage, seed, labels, acc, lr=1e-3, extra=None):
    folder.mkdir(parents=True)
    cfg = {"seed": seed, "stage": stage, "run_dir": str(folder), "data": {"labels_per_class": labels},
           "semi": {"lr": lr}, **(extra or {})}
    OmegaConf.save(OmegaConf.create(cfg), folder / "config_resolved.yaml")
    results = {"stage": stage, "seed": seed, "labels_per_class": labels, "test_acc": acc}
    (folder / "results.json").write_text(json.dumps(results))


def test_summary_groups_by_stage_labels_and_swept_keys(tmp_path):
    accs = {0: 0.90, 1: 0.92, 2: 0.97}
    for seed, acc in accs.items():
        fake_run(tmp_path / f"a{seed}", "semi", seed, 10, acc)
        fake_run(tmp_path / f"b{seed}", "semi", seed, 10, acc - 0.1, lr=1e-2)
        fake_run(tmp_path / f"c{seed}", "baseline", seed, 1, 0.5, extra={"probe": {"lr": 1e-3}})  # newer config
    table, _ = report.write_summary(tmp_path)
    swept, rows = report.summarize(report.find_runs(tmp_path))
    assert swept == ["semi.lr"]
    semi = next(r for r in rows if r["stage"] == "semi" and r["semi.lr"] == 1e-3)
    assert semi["n"] == 3 and semi["mean"] == pytest.approx(statistics.fmean(accs.values()))
    assert semi["std"] == pytest.approx(statistics.stdev(accs.values()))
    assert [(r["stage"], r["semi.lr"]) for r in rows] == [("semi", 1e-3), ("semi", 1e-2), ("baseline", 1e-3)]
    assert "93.00 ± 3.61%" in table
    header = (tmp_path / "summary.csv").read_text().splitlines()[0]
    assert header == "stage,labels_per_class,semi.lr,n,mean,std"


def test_stage_all_runs_are_read_from_their_stage_folders(tmp_path):
    run = tmp_path / "all"
    for stage, acc in (("pretext", 0.99), ("semi", 0.9), ("baseline", 0.95)):
        (run / stage).mkdir(parents=True)
        (run / stage / "results.json").write_text(
            json.dumps({"stage": stage, "seed": 0, "labels_per_class": 10, "test_acc": acc}))
    OmegaConf.save(OmegaConf.create({"seed": 0, "data": {"labels_per_class": 10}}), run / "config_resolved.yaml")
    (run / "results.json").write_text(json.dumps({"pretext": {}, "semi": {}, "baseline": {}}))
    _, rows = report.summarize(report.find_runs(tmp_path))
    assert [(r["stage"], r["n"]) for r in rows] == [("pretext", 1), ("semi", 1), ("baseline", 1)]


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        report.main([str(tmp_path)])


def test_report_draws_the_label_curve_across_separate_sweeps(tmp_path):
    for labels, seeds in ((1, [0, 1]), (10, [0, 1, 2])):  # two sweeps, told apart only by label_sweep.*
        for seed in seeds:
            for stage, acc in (("semi", 0.5 + labels / 100), ("selftrain", 0.6 + labels / 50)):
                fake_run(tmp_path / f"l{labels}" / stage / str(seed), stage, seed, labels, acc + seed / 1000,
                         extra={"label_sweep": {"labels_per_class": [labels], "seeds": seeds}})
    report.main([str(tmp_path)])
    _, rows = report.summarize(report.find_runs(tmp_path))
    assert [(r["stage"], r["labels_per_class"], r["n"]) for r in rows] == [
        ("semi", 1, 2), ("semi", 10, 3), ("selftrain", 1, 2), ("selftrain", 10, 3)]
    assert (tmp_path / "label_curve.png").stat().st_size > 10_000
