"""torchvision's ImageNet ResNet-18/34/50/101 with the spec's prunable-layer rule (spec §3).

A thin subclass of `torchvision.models.ResNet`: same modules, same names, same initialisation as
`torchvision.models.resnetXX(weights=None, num_classes=...)`, so its `state_dict` is
interchangeable with torchvision's. Only the stem changes when `in_channels != 3`.

Prunable: the 7x7 stem and every conv of every block, the block's last conv included (its
output is added to the shortcut; the export scatters it back into the full-width stream).
Not prunable: the projection-shortcut 1x1 convs `layerX.0.downsample.0` and the classifier.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# depth -> (block type, blocks per stage), as in torchvision.models.resnetXX
SPECS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}


class TorchvisionResNet(ResNet):
    """torchvision ResNet-`depth` (18, 34, 50, 101) with `prunable_conv_names()`."""

    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3):
        if depth not in SPECS:
            raise ValueError(f"depth: {depth!r} is not a torchvision ResNet; allowed: 18, 34, 50, 101")
        block, layers = SPECS[depth]
        super().__init__(block, layers, num_classes=num_classes)
        self.depth = depth
        if in_channels != 3:
            # Same geometry as torchvision's stem, fresh kaiming init as ResNet.__init__ does.
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def prunable_conv_names(self) -> list[str]:
        """Qualified names of the prunable convs in forward order (spec §3)."""
        convs = ("conv1", "conv2") if SPECS[self.depth][0] is BasicBlock else ("conv1", "conv2", "conv3")
        names = ["conv1"]
        for s in range(1, 5):
            for b in range(len(getattr(self, f"layer{s}"))):
                names += [f"layer{s}.{b}.{c}" for c in convs]
        return names

