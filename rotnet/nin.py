"""The NIN backbone (three conv blocks) and the linear heads that sit on it."""
from dataclasses import dataclass

import torch
from torch import nn

# (out_channels, kernel) per conv, and the pool that ends the block.
BLOCKS = (
    (((192, 5), (160, 1), (96, 1)), "max"),
    (((192, 5), (192, 1), (192, 1)), "avg"),
    (((192, 3), (192, 1), (192, 1)), None),
)


@dataclass(frozen=True)
class NINConfig:
    in_channels: int = 1


def conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def make_block(c_in: int, convs, pool: str | None) -> nn.Sequential:
    layers = []
    for c_out, k in convs:
        layers.append(conv_bn_relu(c_in, c_out, k))
        c_in = c_out
    if pool == "max":
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    elif pool == "avg":
        layers.append(nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False))
    return nn.Sequential(*layers)


class NIN(nn.Module):
    """Trunk only: ``forward_features`` returns each block's output, ``forward`` the last."""

    def __init__(self, cfg: NINConfig = NINConfig()):
        super().__init__()
        c_in, blocks = cfg.in_channels, []
        for convs, pool in BLOCKS:
            blocks.append(make_block(c_in, convs, pool))
            c_in = convs[-1][0]
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = [convs[-1][0] for convs, _ in BLOCKS]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, blocks: int = 3) -> torch.Tensor:
        """The output of block ``blocks`` (the last one by default)."""
        for block in self.blocks[:blocks]:
            x = block(x)
        return x


class PooledLinear(nn.Sequential):
    """Global average pool, then one linear layer: the head used for every task."""

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, n_classes))
