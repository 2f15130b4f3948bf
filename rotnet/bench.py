"""python -m rotnet.bench: pretext training throughput, rotnet against the common way, in one run.

Paths, all on the same NIN, batch size and optimizer:
  1. rotnet: Trainer + MNISTDataModule + RotationTask, default config (tensor slices, rotations
     made on the device, bf16-mixed, channels_last);
  2. reference: Dataset over torchvision.datasets.MNIST, per-sample PIL rotations, DataLoader,
     fp32, NCHW, a plain PyTorch loop;
  3. the reference loop with rotnet's precision and layout.
"""
import argparse
import gzip
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from rotnet.mnist_files import FILES, locate
from rotnet.run import build_module

CONF = Path(__file__).resolve().parents[1] / "conf"


def rotnet_config(data_dir: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"data.dir={data_dir}", "stage=pretext", "run_dir=.", *overrides])


class StepTimes(L.Callback):
    def __init__(self):
        self.times = []

    def on_train_batch_end(self, trainer, *args):
        self.times.append(time.perf_counter())


def window_rates(times: list[float], warmup: int, steps: int, samples_per_step: int) -> list[float]:
    """Samples per second in consecutive windows of ``steps`` steps, after ``warmup`` steps."""
    t = times[warmup - 1 :]
    return [steps * samples_per_step / (t[i + steps] - t[i]) for i in range(0, len(t) - steps, steps)]


def bench_rotnet(args) -> float:
    cfg = rotnet_config(args.data_dir, f"pretext.batch_size={args.batch_size}")
    dm = instantiate(cfg.data, task="rotation", batch_size=args.batch_size, seed=0)
    timer = StepTimes()
    trainer = instantiate(
        cfg.trainer, max_steps=args.warmup + args.windows * args.steps, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, callbacks=[timer],
    )
    trainer.fit(build_module(cfg, "pretext"), datamodule=dm)
    return statistics.median(window_rates(timer.times, args.warmup, args.steps, 4 * args.batch_size))


def torchvision_root(data_dir: str) -> Path:
    """torchvision's MNIST wants uncompressed files in <root>/MNIST/raw: make that in a temp dir."""
    root = Path(tempfile.mkdtemp(prefix="rotnet-bench-"))
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key, src in locate(Path(data_dir)).items():
        with (gzip.open if src.suffix == ".gz" else open)(src, "rb") as f:
            (raw / FILES[key]).write_bytes(f.read())
    return root


class PILRotations(torch.utils.data.Dataset):
    """The common way: one PIL image at a time, four rotated copies, each through ToTensor/Normalize."""

    def __init__(self, root: Path):
        from torchvision import datasets, transforms

        self.mnist = datasets.MNIST(str(root), train=True, download=False)
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def __len__(self):
        return len(self.mnist)

    def __getitem__(self, i):
        from torchvision.transforms import functional as TF

        image, _ = self.mnist[i]
        return torch.stack([self.to_tensor(TF.rotate(image, 90 * k)) for k in range(4)]), torch.arange(4)


def bench_reference(args, root: Path, fast: bool) -> float:
    from rotnet.tasks import RotationTask

    torch.manual_seed(0)
    model = RotationTask(channels_last=False)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(PILRotations(root), batch_size=args.batch_size, shuffle=True, num_workers=0)
    times, n_steps = [], args.warmup + args.windows * args.steps
    for step, (x, y) in enumerate(loader):
        x, y = x.flatten(0, 1), y.flatten()
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(model.head(model.backbone(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter())
        if step + 1 == n_steps:
            break
    return statistics.median(window_rates(times, args.warmup, args.steps, 4 * args.batch_size))


def train_flops_per_sample() -> float:
    from rotnet.tasks import RotationTask

    model, x = RotationTask(channels_last=False), torch.randn(4, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)).backward()
    return counter.get_total_flops() / 4


def bf16_gemm_peak(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def full_pretext_peak_rss(args) -> tuple[float, float]:
    """Peak RSS (GB) of a pretext run on the whole pool, and its test-set evaluation time (s)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "rotnet", "stage=pretext", f"data.dir={args.data_dir}", f"hydra.run.dir={out}",
               "trainer.max_epochs=1", f"trainer.limit_train_batches={args.memory_steps}",
               "trainer.limit_val_batches=4", "trainer.enable_progress_bar=false"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # kB on Linux
        cfg = rotnet_config(args.data_dir)
        dm = instantiate(cfg.data, task="rotation", batch_size=64, seed=0)
        module = build_module(cfg, "pretext")
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        start = time.perf_counter()
        trainer.test(module, datamodule=dm, verbose=False)
        return rss, time.perf_counter() - start


def epoch_seconds(args, num_unlabeled: int) -> float:
    cfg = rotnet_config(args.data_dir, f"data.num_unlabeled={num_unlabeled}")
    dm = instantiate(cfg.data, task="rotation", batch_size=cfg.pretext.batch_size, seed=0)
    trainer = instantiate(cfg.trainer, max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False)
    start = time.perf_counter()
    trainer.fit(build_module(cfg, "pretext"), datamodule=dm)
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("ROTNET_DATA_DIR", "data"))
    p.add_argument("--batch-size", type=int, default=64, help="images per step (x4 rotated samples)")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing starts")
    p.add_argument("--windows", type=int, default=5, help="timed windows; the median is reported")
    p.add_argument("--steps", type=int, default=5, help="steps per window")
    p.add_argument("--scaling", default="1000,2000,4000", help="data.num_unlabeled sizes for the epoch-time check")
    p.add_argument("--memory-steps", type=int, default=20, help="training steps of the full-pool memory run")
    p.add_argument("--skip-memory", action="store_true", help="skip the full-pool memory and evaluation run")
    args = p.parse_args(argv)

    print(f"rotnet.bench: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, batch {args.batch_size} images "
          f"= {4 * args.batch_size} rotated samples, median of {args.windows} windows of {args.steps} steps")
    rate1 = bench_rotnet(args)
    print(f"1 rotnet (Trainer + DataModule, defaults)     {rate1:9.1f} samples/s", flush=True)
    root = torchvision_root(args.data_dir)
    try:
        rate2 = bench_reference(args, root, fast=False)
        print(f"2 reference (PIL + DataLoader, fp32, NCHW)   {rate2:9.1f} samples/s", flush=True)
        rate3 = bench_reference(args, root, fast=True)
        print(f"3 reference loop, bf16 + channels_last       {rate3:9.1f} samples/s", flush=True)
    finally:
        shutil.rmtree(root)
    print(f"ratio 1/2 = {rate1 / rate2:.2f}x   ratio 1/3 = {rate1 / rate3:.2f}x")

    flops, peak = train_flops_per_sample(), bf16_gemm_peak()
    print(f"path 1: {flops / 1e9:.3f} GFLOP per training sample (torch FlopCounterMode, forward + backward) "
          f"-> {rate1 * flops / 1e9:.0f} GFLOP/s = {100 * rate1 * flops / peak:.0f}% of this machine's bf16 peak "
          f"({peak / 1e9:.0f} GFLOP/s, measured as a 4096^3 bf16 matmul)")

    if not args.skip_memory:
        rss, test_s = full_pretext_peak_rss(args)
        print(f"peak resident memory, pretext on the whole pool ({args.memory_steps} steps, validation, "
              f"test): {rss:.2f} GB (ru_maxrss of the child process)")
        print(f"test-set evaluation, 4 rotations x 10,000 images: {test_s:.1f} s")

    sizes = [int(s) for s in args.scaling.split(",")]
    seconds = [epoch_seconds(args, n) for n in sizes]
    per_k = ", ".join(f"{n}: {s:.1f} s ({1000 * s / n:.2f} s per 1000 images)" for n, s in zip(sizes, seconds))
    print(f"pretext epoch time by data.num_unlabeled: {per_k}")


if __name__ == "__main__":
    main()
