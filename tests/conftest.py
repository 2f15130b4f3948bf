import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 240, 60  # 24 training images per class


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def synthetic_mnist(n: int, seed: int):
    """Class-dependent blobs with noise: classes are learnable, orientations tell apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    templates = np.random.default_rng(123).random((10, 28, 28)) ** 4 * 255
    templates[:, :14, :] *= 0.2  # a bright lower half makes rotations distinguishable
    images = np.clip(templates[labels] + rng.normal(0, 20, (n, 28, 28)), 0, 255)
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_mnist(folder: Path, gz_train=True, gz_test=False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, gz, seed in (("train", N_TRAIN, gz_train, 0), ("t10k", N_TEST, gz_test, 1)):
        images, labels = synthetic_mnist(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, gz)
    return folder


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


FAST = [
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "data.eval_batch_size=64",
    "data.monitor_size=40",
]


def make_cfg(mnist_dir: Path, run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[f"data.dir={mnist_dir}", "data.download=false", f"run_dir={run_dir}", *FAST, *overrides],
        )


def cli(*args, cwd, timeout=300):
    """``python -m rotnet ARGS`` as a user would start it (with the fast test settings)."""
    return subprocess.run([sys.executable, "-m", "rotnet", *args, *FAST], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def pretext_ckpt(mnist_dir, tmp_path_factory) -> Path:
    from rotnet.run import run

    out = tmp_path_factory.mktemp("pretext")
    results = run(make_cfg(mnist_dir, out, "stage=pretext", "trainer.max_epochs=1", "pretext.batch_size=16"))
    return Path(results["pretext"]["checkpoint"])
