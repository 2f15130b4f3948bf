"""Find and read the four MNIST IDX files, with errors that name the file at fault."""
import gzip
from pathlib import Path

import numpy as np
import torch

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX magic: two zero bytes, 0x08 (unsigned byte), number of dimensions.
MAGIC = {1: 0x00000801, 3: 0x00000803}


class MNISTFileError(ValueError):
    """An MNIST file is missing or unreadable; the message says which and what to do."""


def _candidates(folder: Path, name: str):
    for base in (folder, folder / "MNIST" / "raw"):
        yield base / name
        yield base / f"{name}.gz"


def locate(folder: Path) -> dict[str, Path] | None:
    """Paths of the four files if all are present (plain or gzipped, flat or MNIST/raw/), else None."""
    found = {}
    for key, name in FILES.items():
        path = next((p for p in _candidates(folder, name) if p.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def missing_files_error(folder: Path, reason: str) -> MNISTFileError:
    names = ", ".join(FILES.values())
    return MNISTFileError(
        f"MNIST not found in '{folder}' ({reason}). Expected the four files {names} "
        f"(each may be gzipped, '.gz'), either directly in that folder or in its MNIST/raw/ "
        f"subfolder. Point data.dir (or the ROTNET_DATA_DIR environment variable) at a folder "
        f"that holds them, or set data.download=true with network access."
    )


def download(folder: Path) -> dict[str, Path]:
    """Let torchvision fetch MNIST into ``folder/MNIST/raw``."""
    from torchvision.datasets import MNIST

    try:
        folder.mkdir(parents=True, exist_ok=True)
        MNIST(str(folder), train=True, download=True)
        MNIST(str(folder), train=False, download=True)
    except Exception as err:  # network, permissions, checksum: all end the same way
        raise missing_files_error(folder, f"download failed: {err}") from err
    found = locate(folder)
    if found is None:
        raise missing_files_error(folder, "download finished but the files are not there")
    return found


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read one IDX file of unsigned bytes with ``ndim`` dimensions into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise MNISTFileError(f"Cannot read MNIST file '{path}': {err}. Replace it with a good copy.") from err
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MNISTFileError(f"MNIST file '{path}' is truncated ({len(raw)} bytes, shorter than its header). Replace it with a good copy.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != MAGIC[ndim]:
        raise MNISTFileError(
            f"MNIST file '{path}' has magic number {magic:#010x}, expected {MAGIC[ndim]:#010x} "
            f"(an IDX file of {ndim}-dimensional unsigned bytes). It is not the file its name says; replace it."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise MNISTFileError(
            f"MNIST file '{path}' holds {len(raw)} bytes but its header {shape} needs {expected}: "
            f"it is truncated or corrupt. Replace it with a good copy."
        )
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy())


def load_mnist(folder: str | Path, allow_download: bool) -> dict[str, torch.Tensor]:
    """All of MNIST as uint8 tensors: train/test images (N, 28, 28) and labels (N,)."""
    folder = Path(folder).expanduser()
    paths = locate(folder)
    if paths is None:
        if not allow_download:
            raise missing_files_error(folder, "data.download=false")
        paths = download(folder)
    data = {key: read_idx(path, 3 if key.endswith("images") else 1) for key, path in paths.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(data[f"{split}_images"]), len(data[f"{split}_labels"])
        if n_img != n_lab:
            raise MNISTFileError(
                f"MNIST {split} files disagree: '{paths[f'{split}_images']}' has {n_img} images but "
                f"'{paths[f'{split}_labels']}' has {n_lab} labels. Replace them with a matching pair."
            )
    return data
