"""Checkpoints that survive kills: atomic writes, and one more save when the user presses Ctrl-C."""
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write beside the target, fsync, then rename over it: a kill mid-write leaves the old file whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class SaveOnInterrupt(L.Callback):
    """On Ctrl-C, save the state reached so far to ``path`` and say how to resume from it."""

    def __init__(self, path: Path):
        self.path = path

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                print(f"\nrotnet: interrupted at step {trainer.global_step}; saved {self.path}. "
                      f"Resume with the same overrides plus resume={self.path}", flush=True)
