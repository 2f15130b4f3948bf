"""The hand-off between stages: a checkpoint's backbone weights (and for selftrain, a classifier's
head too), loaded strictly."""
from pathlib import Path

import torch

from rotnet.errors import RotnetError
from rotnet.tasks import ClassifierTask

PREFIX = "backbone."


def checkpoint_state(path: str, key: str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the Lightning checkpoint that config key ``key`` points at, or a clear error."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise RotnetError(f"{key}='{path}' {what}. Point it at a run's checkpoints/last.ckpt.")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as err:
        raise RotnetError(
            f"{key}='{path}' is not a readable Lightning checkpoint (torch.load raised {type(err).__name__}). "
            "It may be truncated or corrupt: point it at another run's checkpoints/last.ckpt."
        ) from err


def pretext_backbone_state(path: str | None) -> dict[str, torch.Tensor]:
    """The backbone weights of a pretext (rotation) checkpoint, or a clear error saying why not."""
    if not path:
        raise RotnetError(
            "stage=semi (and stage=probe) needs a pretext checkpoint: set pretrained=<path to a pretext run's "
            "checkpoints/last.ckpt>, or run stage=all, which trains one and hands it over."
        )
    state = checkpoint_state(path, "pretrained")
    head = state.get("head.2.weight")
    if head is not None and head.shape[0] != 4:
        raise RotnetError(
            f"pretrained='{path}' is a {head.shape[0]}-way classifier checkpoint, not a pretext "
            "(4-way rotation) checkpoint. Point it at the checkpoints/last.ckpt of a stage=pretext run."
        )
    return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}


def load_pretext_backbone(module: ClassifierTask, path: str | None) -> None:
    _load_strict(module.backbone, pretext_backbone_state(path), path)


def start_state(path: str | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Where stage=selftrain starts: (backbone, 10-way head or None) from a classifier or pretext checkpoint."""
    if not path:
        raise RotnetError(
            "stage=selftrain needs a checkpoint to start from: set pretrained=<a semi (or baseline) run's "
            "checkpoints/last.ckpt> to start from its classifier, or a pretext run's to start from its backbone "
            "and a new head; stage=all hands over the semi checkpoint itself."
        )
    state = checkpoint_state(path, "pretrained")
    head = state.get("head.2.weight")
    if head is None or head.shape[0] not in (4, 10):
        raise RotnetError(
            f"pretrained='{path}' holds no 4-way (pretext) or 10-way (classifier) head: point it at the "
            "checkpoints/last.ckpt of a stage=pretext, semi or baseline run."
        )
    backbone = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    classifier = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")} if head.shape[0] == 10 else None
    return backbone, classifier


def load_start(module: ClassifierTask, path: str | None) -> None:
    backbone, head = start_state(path)
    _load_strict(module.backbone, backbone, path)
    if head is not None:
        _load_strict(module.head, head, path)


def _load_strict(target: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise RotnetError(
            f"pretrained='{path}' does not hold this NIN backbone's weights ({first} ...). "
            "It was made by another architecture or version: retrain it with stage=pretext."
        ) from err
