"""FlowNetS (Dosovitskiy et al. 2015; ClementPinard/FlowNetPytorch ``flownets``, batchNorm=False)
in torch.onnx's layout.

Encoder: ten ``conv`` = Conv (bias) + LeakyRelu(0.1) (conv1 7x7 s2, conv2/3 5x5 s2, then 3x3;
strides 2 on conv4, conv5, conv6; 64 -> 1024 channels). Decoder, from 1/64 scale to 1/4: at each
level a flow prediction (Conv 3x3 to 2, no bias), its upsampling (ConvTranspose k4 s2 p1, 2 -> 2,
no bias), a ``deconv`` (ConvTranspose k4 s2 p1, no bias, + LeakyRelu 0.1) of the features, and a
Concat of (encoder skip, deconv, upsampled flow). Eval mode returns ``flow2``.

Input ``input`` float32 NCHW ``[1, 6, H, W]``: two RGB frames stacked on channels (normalised);
H and W multiples of 64 (so no crop is needed). Output ``flow2`` float32 ``[1, 2, H/4, W/4]``.
Parameters (:func:`tcc_compiler.zoo._graph.weight_count`): 38,675,536, exactly FlowNetPytorch's
``flownets`` (no BatchNorm, bias-free transposed convs); the original Caffe FlowNetS, whose 8
transposed convs have biases, has 38,676,504 (-0.003%).
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import Builder, T

# name, output channels, kernel, stride
_ENCODER = (("conv1", 64, 7, 2), ("conv2", 128, 5, 2), ("conv3", 256, 5, 2),
            ("conv3_1", 256, 3, 1), ("conv4", 512, 3, 2), ("conv4_1", 512, 3, 1),
            ("conv5", 512, 3, 2), ("conv5_1", 512, 3, 1), ("conv6", 1024, 3, 2),
            ("conv6_1", 1024, 3, 1))


def _conv(b: Builder, x: T, name: str, c: int, k: int, s: int) -> T:
    y = b.conv(x, c, k, s, f"/{name}/{name}.0", names=(f"{name}.0.weight", f"{name}.0.bias"))
    return b.leaky_relu(y, f"/{name}/{name}.1", 0.1)


def _predict(b: Builder, x: T, level: int) -> T:
    name = f"predict_flow{level}"
    return b.conv(x, 2, 3, 1, f"/{name}", gamma=None, bias=False, names=(f"{name}.weight", ""))


def record_flownets(b: Builder) -> list[T]:
    """FlowNetS encoder-decoder: see the module docstring."""
    x, skips = b.input, {}
    for name, c, k, s in _ENCODER:
        x = _conv(b, x, name, c, k, s)
        skips[name] = x
    levels = ((6, 5, "conv5_1", 512), (5, 4, "conv4_1", 256), (4, 3, "conv3", 128),
              (3, 2, "conv2", 64))
    for level, nxt, skip, c in levels:
        flow = _predict(b, x, level)
        up_name = f"upsampled_flow{level}_to_{nxt}"
        flow_up = b.conv_transpose(flow, 2, f"/{up_name}", f"{up_name}.weight")
        de = f"deconv{nxt}"
        out_de = b.leaky_relu(b.conv_transpose(x, c, f"/{de}/{de}.0", f"{de}.0.weight"),
                              f"/{de}/{de}.1", 0.1)
        x = b.concat([skips[skip], out_de, flow_up], 1, "")
    return [b.conv(x, 2, 3, 1, "/predict_flow2", gamma=None, bias=False,
                   names=("predict_flow2.weight", ""), out_name="flow2")]
