#!/usr/bin/env python3
"""Dev only (needs torch, e.g. the venv at /tmp/venv-torch; tests never run it): export a tiny
PyTorch quantization-aware-trained net to ONNX the way QAT users do, for ``tccc compile``.

The net (Conv-BN-ReLU, MaxPool, Conv-BN, residual Add, ReLU, global average pool, Linear) is
prepared with eager-mode QAT (``torch.ao.quantization``, FakeQuantize modules: per-tensor
uint8 activations, per-channel symmetric int8 weights with ``quant_min = -128``), trained a
few steps on random data, and exported *with its fake-quant modules* (``torch.onnx.export``,
TorchScript exporter, opset 13): activations become QuantizeLinear/DequantizeLinear pairs,
weights the weight-only fake-quant pairs on float constants that tccc evaluates
(tcc_compiler/frontend/qdq_import.py).

Measured (ORT 1.32, torch 2.13, 3 random inputs): compiles with calibration "fixed"; top-1 equal,
output within 1 LSB of ONNX Runtime on the QDQ model (SQNR 32-35 dB): this export keeps the
QAT training form of Conv+BN (conv with fake-quantized weights, then Div / Add /
BatchNormalization in float), which tccc folds into the conv, so those two convs' weights are
re-quantized by tccc (a rounding the model does not have). Fold BN before the export
(``torch.ao.quantization.fuse_modules`` in eval mode) for an exact match.

Usage: /tmp/venv-torch/bin/python tools/dev/qat_export.py -o qat_tiny.onnx [--hw 32]
       then: tccc compile qat_tiny.onnx --input 32x32x3 -o out/   (calibration "fixed")
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.ao import quantization as tq


class Tiny(nn.Module):
    """1x3xHxW -> 10 logits; QuantStub/DeQuantStub around the quantized part."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.c1, self.b1, self.r1 = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.add = nn.quantized.FloatFunctional()
        self.r2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.quant(x)
        p = self.pool(self.r1(self.b1(self.c1(x))))
        y = self.r2(self.add.add(self.b2(self.c2(p)), p))
        y = self.fc(torch.flatten(self.gap(y), 1))
        return self.dequant(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--hw", type=int, default=32)
    a = ap.parse_args()
    torch.manual_seed(0)
    m = Tiny().train()
    m = tq.fuse_modules_qat(m, [["c1", "b1", "r1"], ["c2", "b2"]])
    # plain FakeQuantize modules (the default QAT qconfig's fused observer op has no ONNX
    # export): uint8 per-tensor activations, int8 symmetric per-channel weights (-128..127)
    m.qconfig = tq.QConfig(
        activation=tq.FakeQuantize.with_args(
            observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
            dtype=torch.quint8),
        weight=tq.FakeQuantize.with_args(
            observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0))
    tq.prepare_qat(m, inplace=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    for _ in range(20):  # a few QAT steps so the observers and fake-quant ranges settle
        x = torch.randn(8, 3, a.hw, a.hw)
        loss = nn.functional.cross_entropy(m(x), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    m.apply(tq.disable_observer)
    torch.onnx.export(m, torch.randn(1, 3, a.hw, a.hw), a.output, opset_version=13,
                      input_names=["x"], output_names=["y"], dynamo=False)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
