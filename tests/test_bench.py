from rotnet import bench


def test_bench_prints_every_figure(mnist_dir, capsys):
    bench.main(["--data-dir", str(mnist_dir), "--batch-size", "4", "--warmup", "1", "--windows", "2", "--steps", "1",
                "--scaling", "40,80,120", "--skip-memory"])
    out = capsys.readouterr().out
    for figure in ("1 rotnet", "2 reference", "3 reference loop", "ratio 1/2", "ratio 1/3", "GFLOP/s",
                   "epoch time by data.num_unlabeled: 40:"):
        assert figure in out, figure


def test_window_rates_are_per_window_throughput():
    times = [0.0, 1.0, 2.0, 4.0, 6.0, 7.0]
    assert bench.window_rates(times, warmup=1, steps=2, samples_per_step=10) == [10.0, 5.0]
