"""A tiny pipeline on the real MNIST, when ../shared/data/mnist is there (pytest -m slow)."""
import pytest

from conftest import ROOT, make_cfg
from rotnet.run import run

REAL = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason="no real MNIST in ../shared/data/mnist")
def test_tiny_pipeline_on_real_mnist(tmp_path):
    cfg = make_cfg(REAL, tmp_path, "stage=all", "data.num_unlabeled=3000", "data.eval_batch_size=2048",
                   "pretext.epochs=1", "semi.epochs=20", "baseline.epochs=20", "selftrain.epochs=1",
                   "selftrain.steps_per_epoch=50")
    results = run(cfg)
    assert results["pretext"]["num_unlabeled"] == 3000
    assert results["pretext"]["test_acc"] > 0.8
    assert results["semi"]["test_acc"] > 0.5
    assert results["baseline"]["test_acc"] > 0.5
    assert results["selftrain"]["test_acc"] > 0.5
    assert (tmp_path / "results.md").is_file()
