"""Small reference networks built in the repository (no weight downloads) used by the
tests, the memory/speed benchmarks and the training-accuracy script. All use plain
``nn.Conv*``/``nn.ReLU``; convert them with :func:`timeprobe.xconv.convert_net`."""
from __future__ import annotations

from torch import nn

__all__ = ["conv_stack", "resnet18_like", "squeezenet_like", "digits_cnn"]


def conv_stack(channels: int = 16, depth: int = 4, kernel_size: int = 3, bias: bool = False):
    """``depth`` ``channels``->``channels`` convolutions ('same' zero padding), no
    nonlinearity: the seed's 4-layer memory benchmark."""
    return nn.Sequential(*[nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                     bias=bias) for _ in range(depth)])


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + idt)


def resnet18_like(num_classes: int = 10, in_channels: int = 3, width: int = 64):
    """ResNet-18 topology (7x7/2 stem, max-pool, 4 stages of 2 basic blocks, global
    average pool, linear head), randomly initialised."""
    w = width
    layers = [nn.Conv2d(in_channels, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w),
              nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = w
    for i, cout in enumerate([w, 2 * w, 4 * w, 8 * w]):
        for j in range(2):
            layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


class _Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_act = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand1x1_act = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=True)

    def forward(self, x):
        import torch
        x = self.squeeze_act(self.squeeze(x))
        return torch.cat([self.expand1x1_act(self.expand1x1(x)),
                          self.expand3x3_act(self.expand3x3(x))], 1)


def squeezenet_like(num_classes: int = 10, in_channels: int = 3):
    """SqueezeNet 1.1 topology (Fire modules, max-pools, 1x1 conv classifier)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, 2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        _Fire(64, 16, 64, 64), _Fire(128, 16, 64, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        _Fire(128, 32, 128, 128), _Fire(256, 32, 128, 128),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        _Fire(256, 48, 192, 192), _Fire(384, 48, 192, 192),
        _Fire(384, 64, 256, 256), _Fire(512, 64, 256, 256),
        nn.Dropout(0.5), nn.Conv2d(512, num_classes, 1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def digits_cnn(num_classes: int = 10, width: int = 16):
    """Small CNN for 8x8 single-channel images (scikit-learn's digits)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * width * 16, num_classes))
