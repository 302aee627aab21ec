"""LeNet-5 for 32x32 MNIST digits, as the usual PyTorch definition exports (opset 17).

The PyTorch MNIST LeNet-5 (``conv1 = nn.Conv2d(1, 6, 5)``, ``conv2 = nn.Conv2d(6, 16, 5)``,
``fc1 = nn.Linear(400, 120)``, ``fc2 = nn.Linear(120, 84)``, ``fc3 = nn.Linear(84, 10)``;
forward ``max_pool2d(relu(conv(x)), 2)`` twice, ``flatten``, ``relu(fc1)``, ``relu(fc2)``,
``fc3``): Conv 5x5 without padding -> Relu -> MaxPool 2x2 -> Conv 5x5 -> Relu -> MaxPool 2x2 ->
Flatten -> Gemm 120 -> Relu -> Gemm 84 -> Relu -> Gemm 10. The functional calls give the
unscoped names torch writes for them (``/Relu``, ``/MaxPool_1``, ``/Flatten``), the modules
``/conv1/Conv`` ... ``/fc3/Gemm`` with initializers ``conv1.weight`` ... ``fc3.bias``. No
BatchNorm: the convs keep He-initialised weights and small biases.

Input ``input`` float32 NCHW ``[1, C, 32, 32]`` (C = 1 for MNIST; normalised to mean ~0,
std ~1); only 32x32, as ``fc1`` takes exactly 16 x 5 x 5 values. Output ``logits`` float32
``[1, 10]``. Parameters (:func:`tcc_compiler.zoo._graph.weight_count`): 61,706 for one input
channel (torch: 61,706).
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import Builder, T

SIZE_PX = 32  # the only input size: fc1 takes 16 channels x 5 x 5


def record_lenet5(b: Builder) -> list[T]:
    """LeNet-5: two Conv 5x5 + Relu + MaxPool 2x2 stages, three Gemms (120, 84, 10)."""
    x = b.input
    for conv, ch in (("conv1", 6), ("conv2", 16)):
        x = b.conv(x, ch, 5, 1, f"/{conv}", pad=0, gamma=None,
                   names=(f"{conv}.weight", f"{conv}.bias"))
        x = b.maxpool(b.relu(x, ""), 2, 2, 0, "")
    x = b.flatten(x, "")
    for fc, n in (("fc1", 120), ("fc2", 84)):
        x = b.relu(b.gemm(x, n, f"/{fc}", (f"{fc}.weight", f"{fc}.bias"), logits_std=1.0), "")
    return [b.gemm(x, 10, "/fc3", ("fc3.weight", "fc3.bias"), out_name="logits")]
