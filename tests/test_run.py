import json
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from conftest import ROOT, cli, make_cfg
from rotnet.run import run

CONFIG = ROOT / "conf"


@pytest.mark.parametrize("stage", ["pretext", "semi", "baseline", "selftrain", "all", "probe", "label_sweep"])
@pytest.mark.parametrize("experiment", [None, "quick", "reference"])
def test_every_stage_and_preset_composes(stage, experiment, tmp_path):
    preset = [f"experiment={experiment}"] if experiment else []
    cfg = make_cfg(tmp_path, tmp_path, f"stage={stage}", *preset)
    assert cfg.stage == stage and cfg.seed == 0
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if experiment == "reference":
        assert cfg.data.label_selection == "first" and cfg.pretext.epochs == 20 and cfg.baseline.batch_size == 50
        assert cfg.model.freeze_blocks == 2 and cfg.pretext.steps_per_epoch is None


def test_typos_and_unknown_groups_are_errors(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG), version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["data.labels_per_clas=5"])
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["stage=finetune"])
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["experiment=nope"])


def read_results(folder):
    return json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("stage", ["pretext", "baseline"])
def test_stage_fast_dev_run(stage, mnist_dir, tmp_path):
    results = run(make_cfg(mnist_dir, tmp_path, f"stage={stage}", "trainer.fast_dev_run=true"))[stage]
    on_disk = read_results(tmp_path)
    assert on_disk == results
    assert on_disk["stage"] == stage and on_disk["seed"] == 0 and 0 <= on_disk["test_acc"] <= 1
    assert {"epochs", "seconds"} <= on_disk.keys()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert len(json.loads((tmp_path / "labeled_indices.json").read_text())) == 100


def test_semi_fast_dev_run_from_a_real_pretext_checkpoint(mnist_dir, pretext_ckpt, tmp_path):
    results = run(make_cfg(mnist_dir, tmp_path, "stage=semi", f"pretrained={pretext_ckpt}", "trainer.fast_dev_run=true"))
    assert results["semi"]["pretrained"] == str(pretext_ckpt) and results["semi"]["freeze_blocks"] == 1


def test_pretext_epoch_writes_metrics_and_checkpoint(pretext_ckpt):
    out = pretext_ckpt.parents[1]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_epoch", "train/acc", "val/acc", "test/acc"} <= set(header)
    assert read_results(out)["epochs"] == 1
    assert (out / "config_resolved.yaml").is_file()
    for figure in ("learning_curves.png", "confusion_matrix.png", "rotation_examples.png"):
        assert (out / figure).stat().st_size > 10_000, figure


def test_stage_all_hands_over_and_writes_the_table(mnist_dir, tmp_path):
    cfg = make_cfg(mnist_dir, tmp_path, "stage=all", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "pretext.batch_size=8", "semi.val_every=1")
    results = run(cfg)
    assert list(results) == ["pretext", "semi", "baseline", "selftrain"]
    assert results["semi"]["pretrained"] == results["pretext"]["checkpoint"]
    assert results["selftrain"]["pretrained"] == results["semi"]["checkpoint"]
    table = (tmp_path / "results.md").read_text()
    for stage, ref in (("pretext", "99.53%"), ("semi", "86.48%"), ("baseline", "11%"), ("selftrain", "-")):
        assert f"| {stage} |" in table and ref in table
        assert (tmp_path / stage / "results.json").is_file()
    assert results["semi"]["val_acc"] is not None


def test_cli_semi_without_pretrained_fails_clearly(mnist_dir, tmp_path):
    proc = cli("stage=semi", f"data.dir={mnist_dir}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "needs a pretext checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_cli_missing_mnist_fails_clearly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("stage=baseline", f"data.dir={empty}", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}",
               cwd=tmp_path)
    assert proc.returncode == 2
    assert "train-images-idx3-ubyte" in proc.stderr and str(empty) in proc.stderr


def test_cli_runs_and_lands_in_outputs(mnist_dir, tmp_path):
    proc = cli("stage=baseline", f"data.dir={mnist_dir}", "trainer.fast_dev_run=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "baseline").iterdir())
    assert len(runs) == 1 and (runs[0] / "results.json").is_file() and (runs[0] / ".hydra" / "config.yaml").is_file()


def test_cli_multirun_sweep_one_dir_per_job(mnist_dir, tmp_path):
    proc = cli("-m", "stage=baseline", "seed=0,1", f"data.dir={mnist_dir}", "trainer.fast_dev_run=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sweep,) = list((tmp_path / "outputs" / "multirun").iterdir())
    seeds = sorted(read_results(sweep / str(n))["seed"] for n in (0, 1))
    assert seeds == [0, 1]
    from rotnet.report import write_summary

    write_summary(sweep)
    lines = (sweep / "summary.csv").read_text().splitlines()
    assert lines[0] == "stage,labels_per_class,n,mean,std" and lines[1].startswith("baseline,10,2,")


def test_tensorboard_logger_by_one_override(mnist_dir, tmp_path):
    pytest.importorskip("tensorboard")
    run(make_cfg(mnist_dir, tmp_path, "stage=baseline", "logger=tensorboard", "trainer.max_epochs=1",
                 "baseline.val_every=1"))
    assert list(tmp_path.glob("events.out.tfevents.*")) and (tmp_path / "metrics.csv").is_file()


def test_probe_stage_fits_one_linear_head_per_frozen_block(mnist_dir, pretext_ckpt, tmp_path):
    import torch

    results = run(make_cfg(mnist_dir, tmp_path, "stage=probe", f"pretrained={pretext_ckpt}", "trainer.max_epochs=1"))
    assert list(results) == ["probe_block1", "probe_block2", "probe_block3"]
    pretext = torch.load(pretext_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for block, width in ((1, 96), (2, 192), (3, 192)):
        assert read_results(tmp_path / f"block{block}")["stage"] == f"probe_block{block}"
        probe = torch.load(tmp_path / f"block{block}" / "checkpoints" / "last.ckpt", map_location="cpu",
                           weights_only=True)["state_dict"]
        assert probe["head.2.weight"].shape == (10, width)
        trunk = [k for k in pretext if k.startswith("backbone.")]
        assert all(torch.equal(probe[k], pretext[k]) for k in trunk), "a probe changed the frozen backbone"


def test_label_sweep_trains_one_pretext_model_and_draws_the_curve(mnist_dir, tmp_path):
    results = run(make_cfg(mnist_dir, tmp_path, "stage=label_sweep", "label_sweep.labels_per_class=[1,3]",
                           "label_sweep.seeds=[0,1]", "label_sweep.stages=[semi,baseline]", "trainer.max_epochs=1",
                           "pretext.batch_size=16"))
    assert list(results)[0] == "pretext" and len(results) == 1 + 2 * 2 * 2
    checkpoint = results["pretext"]["checkpoint"]
    assert all(r["pretrained"] == checkpoint for k, r in results.items() if k.startswith("semi/"))
    assert results["baseline/labels3_seed1"]["labels_per_class"] == 3
    assert len(json.loads((tmp_path / "semi" / "labels3_seed1" / "labeled_indices.json").read_text())) == 30
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["pretext", "10", "1"], ["semi", "1", "2"], ["semi", "3", "2"], ["baseline", "1", "2"], ["baseline", "3", "2"]]
    assert (tmp_path / "label_curve.png").stat().st_size > 10_000


def test_label_sweep_starts_selftrain_from_the_same_points_semi_model(mnist_dir, pretext_ckpt, tmp_path):
    results = run(make_cfg(mnist_dir, tmp_path, "stage=label_sweep", f"pretrained={pretext_ckpt}",
                           "label_sweep.labels_per_class=[2]", "label_sweep.seeds=[0,1]",
                           "label_sweep.stages=[semi,selftrain]", "trainer.max_epochs=1"))
    assert list(results) == ["semi/labels2_seed0", "selftrain/labels2_seed0", "semi/labels2_seed1",
                             "selftrain/labels2_seed1"]
    for seed in (0, 1):
        assert results[f"selftrain/labels2_seed{seed}"]["pretrained"] == results[f"semi/labels2_seed{seed}"]["checkpoint"]
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in lines[1:]] == [["semi", "2", "2"], ["selftrain", "2", "2"]]


@pytest.mark.parametrize("launcher, plugin", [("joblib", "hydra_plugins.hydra_joblib_launcher"),
                                              ("submitit_local", "hydra_plugins.hydra_submitit_launcher")])
def test_sweeps_through_hydra_launchers(launcher, plugin, mnist_dir, tmp_path):
    pytest.importorskip(plugin)
    proc = cli("-m", f"hydra/launcher={launcher}", "stage=baseline", "seed=0,1", f"data.dir={mnist_dir}",
               "trainer.fast_dev_run=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sweep,) = list((tmp_path / "outputs" / "multirun").iterdir())
    assert sorted(read_results(sweep / str(n))["seed"] for n in (0, 1)) == [0, 1]
