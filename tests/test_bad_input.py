"""Bad input: a one-paragraph error before any training, a non-zero exit, nothing written."""
import pytest

from conftest import cli, make_cfg
from rotnet.errors import RotnetError
from rotnet.mnist_files import MNISTFileError
from rotnet.run import run


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.labels_per_class=0", "data.labels_per_class=0"),
        ("data.labels_per_class=24", "smallest class"),  # 24 per class in the fixture: none left unlabeled
        ("data.num_unlabeled=0", "data.num_unlabeled=0"),
        ("data.num_unlabeled=100000", "larger than the unlabeled pool"),
        ("data.val_fraction=0", "data.val_fraction=0"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5"),
        ("data.label_selection=last", "random or first"),
        ("model.freeze_blocks=4", "model.freeze_blocks=4"),
        ("model.freeze_blocks=-1", "model.freeze_blocks=-1"),
        ("pretext.lr=0", "pretext.lr=0"),
        ("semi.lr=-0.1", "semi.lr=-0.1"),
        ("baseline.batch_size=0", "baseline.batch_size=0"),
        ("pretext.batch_size=-8", "pretext.batch_size=-8"),
        ("semi.optimizer=lbfgs", "sgd or adam or adamw"),
        ("model.backbone_lr_scale=0", "model.backbone_lr_scale=0"),
        ("resume=/no/such.ckpt", "does not exist"),
        ("label_sweep.stages=[pretext]", "semi, baseline and/or selftrain"),
        ("selftrain.threshold=1.5", "selftrain.threshold=1.5"),
        ("selftrain.student_view=both", "strong or weak or same"),
        ("selftrain.unlabeled_batch_size=0", "selftrain.unlabeled_batch_size=0"),
        ("selftrain.rotation_weight=-1", "selftrain.rotation_weight=-1"),
        ("selftrain.steps_per_epoch=0", "selftrain.steps_per_epoch=0"),
        ("selftrain.freeze_blocks=5", "selftrain.freeze_blocks=5"),
        ("data.strong_scale=1.0", "data.strong_scale=1.0"),
        ("data.strong_cutout=-2", "data.strong_cutout=-2"),
    ],
)
def test_bad_values_fail_before_training(override, named, mnist_dir, tmp_path):
    with pytest.raises(RotnetError, match=named.replace(".", r"\.").replace("+", r"\+")) as err:
        run(make_cfg(mnist_dir, tmp_path / "run", "stage=pretext", override))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stage", ["all", "probe"])
def test_resume_of_a_multi_run_stage_is_refused(stage, mnist_dir, pretext_ckpt, tmp_path):
    with pytest.raises(RotnetError, match="one training run at a time"):
        run(make_cfg(mnist_dir, tmp_path / "run", f"stage={stage}", f"resume={pretext_ckpt}", f"pretrained={pretext_ckpt}"))


def test_damaged_mnist_fails_before_training(tmp_path):
    from conftest import write_mnist

    folder = write_mnist(tmp_path / "mnist", gz_train=False)
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:50])
    with pytest.raises(MNISTFileError, match="train-labels-idx1-ubyte"):
        run(make_cfg(folder, tmp_path / "run", "stage=baseline"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["stage=finetune"], "finetune"),
        (["experiment=huge"], "huge"),
        (["data.labels_per_clas=5"], "labels_per_clas"),
        (["model.freeze_blocks=7"], "model.freeze_blocks=7"),
    ],
)
def test_cli_bad_input_is_one_clear_paragraph(args, named, mnist_dir, tmp_path):
    proc = cli(*args, f"data.dir={mnist_dir}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_cli_corrupt_pretrained_checkpoint(mnist_dir, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = cli("stage=semi", f"pretrained={bad}", f"data.dir={mnist_dir}", f"hydra.run.dir={tmp_path / 'run'}",
               cwd=tmp_path)
    assert proc.returncode == 2 and "truncated or corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_selftrain_needs_a_start_checkpoint(mnist_dir, pretext_ckpt, tmp_path):
    proc = cli("stage=selftrain", f"data.dir={mnist_dir}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2 and "needs a checkpoint to start from" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "results.json").exists()
    import torch

    ckpt = torch.load(pretext_ckpt, map_location="cpu", weights_only=True)
    probe = dict(ckpt, state_dict=dict(ckpt["state_dict"], **{"head.2.weight": torch.zeros(10, 96)}))
    torch.save(probe, tmp_path / "probe.ckpt")
    proc = cli("stage=selftrain", f"pretrained={tmp_path / 'probe.ckpt'}", f"data.dir={mnist_dir}",
               f"hydra.run.dir={tmp_path / 'run2'}", cwd=tmp_path)
    assert proc.returncode == 2 and "does not hold this NIN" in proc.stderr and "Traceback" not in proc.stderr


def test_non_finite_loss_stops_with_stage_and_step(mnist_dir, tmp_path, monkeypatch):
    import rotnet.tasks

    real = rotnet.tasks.F.cross_entropy
    calls = []

    def poisoned(logits, y):
        calls.append(1)
        return real(logits, y) * (float("nan") if len(calls) >= 3 else 1.0)

    monkeypatch.setattr(rotnet.tasks.F, "cross_entropy", poisoned)
    cfg = make_cfg(mnist_dir, tmp_path, "stage=baseline", "trainer.max_epochs=2", "trainer.num_sanity_val_steps=0")
    with pytest.raises(RotnetError, match=r"stage=baseline stopped: the training loss became nan at step 2") as err:
        run(cfg)
    assert "lr" in str(err.value) and "gradient_clip_val" in str(err.value)


def test_label_sweep_checks_every_budget_before_training(mnist_dir, tmp_path):
    with pytest.raises(RotnetError, match="data.labels_per_class=30 is too many"):
        run(make_cfg(mnist_dir, tmp_path / "run", "stage=label_sweep", "label_sweep.labels_per_class=[1,30]"))
    assert not (tmp_path / "run").exists()
