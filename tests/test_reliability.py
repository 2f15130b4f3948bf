"""Interruption, resume, atomic checkpoints, reproducibility, run directories, DDP."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import FAST, cli, make_cfg
from rotnet.checkpointing import AtomicCheckpointIO
from rotnet.run import run

METRICS = ("test_acc", "test_loss", "val_acc", "epochs", "steps")
# 112 pool images for pretext training at 8 a batch: 14 steps an epoch, a checkpoint every 3.
PRETEXT = ["stage=pretext", "pretext.batch_size=8", "trainer.max_epochs=2", "checkpoint_every_n_steps=3",
           "trainer.precision=32-true", "data.val_fraction=0.2"]
# selftrain: all 140 pool images at 10 a batch, 14 steps an epoch; the moving average is in the checkpoint.
SELFTRAIN = ["stage=selftrain", "selftrain.unlabeled_batch_size=10", "selftrain.steps_per_epoch=null",
             "trainer.max_epochs=2", "checkpoint_every_n_steps=3", "trainer.precision=32-true"]


def start(args, cwd, out):
    cmd = [sys.executable, "-m", "rotnet", *args, *FAST, f"hydra.run.dir={out}"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def metrics(folder):
    results = json.loads((folder / "results.json").read_text())
    return {k: results[k] for k in METRICS}


@pytest.mark.parametrize("stage", ["pretext", "selftrain"])
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(stage, mnist_dir, pretext_ckpt, tmp_path):
    args = [*(PRETEXT if stage == "pretext" else [*SELFTRAIN, f"pretrained={pretext_ckpt}"]), f"data.dir={mnist_dir}"]
    proc = start(args, tmp_path, tmp_path / "killed")
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    wait_for(ckpt, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert step % 14 != 0, "the kill should land mid-epoch"
    resumed = cli(*args, f"resume={ckpt}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = cli(*args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "straight")


def test_ctrl_c_saves_a_resumable_checkpoint(mnist_dir, tmp_path):
    args = [*PRETEXT, "trainer.max_epochs=3", f"data.dir={mnist_dir}"]
    proc = start(args, tmp_path, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    wait_for(ckpt, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted at step" in out
    resumed = cli(*args, f"resume={ckpt}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics(tmp_path / "resumed")["steps"] == 42


def test_a_failed_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    good = target.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    assert target.read_bytes() == good and os.listdir(tmp_path) == ["last.ckpt"]


def test_same_seed_same_results(mnist_dir, tmp_path):
    args = ("stage=baseline", "trainer.max_epochs=3", "baseline.val_every=1")
    first = run(make_cfg(mnist_dir, tmp_path / "a", *args))["baseline"]
    second = run(make_cfg(mnist_dir, tmp_path / "b", *args))["baseline"]
    assert {k: first[k] for k in METRICS} == {k: second[k] for k in METRICS}
    assert (tmp_path / "a" / "labeled_indices.json").read_text() == (tmp_path / "b" / "labeled_indices.json").read_text()


def test_runs_started_together_get_their_own_directories(mnist_dir, tmp_path):
    cmd = [sys.executable, "-m", "rotnet", "stage=baseline", "trainer.fast_dev_run=true", f"data.dir={mnist_dir}", *FAST]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    runs = list((tmp_path / "outputs" / "baseline").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)


def test_ddp_on_two_cpu_processes(mnist_dir, tmp_path):
    proc = cli("stage=all", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1",
               "trainer.limit_train_batches=2", "pretext.batch_size=8", f"data.dir={mnist_dir}", cwd=tmp_path,
               timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list((tmp_path / "outputs" / "all").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results) == ["pretext", "semi", "baseline", "selftrain"]
    assert all(0 <= r["test_acc"] <= 1 for r in results.values())
    assert len(list(run_dir.rglob("results.json"))) == 5  # one per stage and the combined one
