"""A trained LeNet-5 for the vendor zoo's LeNet5 row, on real handwritten digits (dev only).

The vendor's LeNet5 row (MNIST, 32x32x1, 0.05 MB of weights) is a trained network. ``tccc zoo
lenet5`` has seeded He-initialised weights, whose int8 values are close to uniform: their
entropy alone is 56.9 KB, so no lossless format gets them under 50 KB. Trained weights are
peaked around zero and compress. MNIST itself cannot be downloaded here (package registries
only), so this trains the same LeNet-5 (the module structure ``tcc_compiler/zoo/lenet.py``
copies) on scikit-learn's bundled handwritten digits (1,797 8x8 scans of 0..16, UCI "Optical
Recognition of Handwritten Digits"), enlarged to 32x32 greyscale PNGs. Two steps:

    /tmp/venv-torch/bin/python tools/dev/lenet_digits.py train -o /tmp/lenet
    PYTHONPATH=$PWD python3 tools/dev/lenet_digits.py try -o /tmp/lenet

``train`` (torch + scikit-learn venv) writes ``lenet5_digits.onnx`` (torch.onnx, opset 17),
``test/*.png`` + ``test_labels.txt`` (every 5th digit, not trained on), ``calib/*.png`` (50
training digits) and ``norm.json`` (the training pixels' mean/std in units of pixel/255).
``try`` (the project's python) runs ``tccc compile --input 32x32x1`` calibrated on ``calib/``
with that mean/std, then ``tccc eval --check`` on the test digits, and prints one JSON object:
the weight and command binary sizes (bytes), the weight compression ratio, FP32 and INT8 top-1
and the flips.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SIZE = 32


def train(out: Path, epochs: int = 40, seed: int = 0) -> None:
    """Train LeNet-5 on the digits and write the files ``try`` reads (see the module doc)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from sklearn.datasets import load_digits

    class LeNet5(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 6, 5)
            self.conv2 = torch.nn.Conv2d(6, 16, 5)
            self.fc1 = torch.nn.Linear(400, 120)
            self.fc2 = torch.nn.Linear(120, 84)
            self.fc3 = torch.nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = torch.flatten(x, 1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    torch.manual_seed(seed)
    digits = load_digits()
    pix = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize(
        (SIZE, SIZE), Image.BILINEAR)) for im in digits.images])          # N x 32 x 32 uint8
    labels = digits.target
    test = np.arange(len(pix)) % 5 == 0
    x = pix.astype(np.float32) / 255.0
    mean, std = float(x[~test].mean()), float(x[~test].std())
    xt = torch.from_numpy((x[:, None] - mean) / std)
    yt = torch.from_numpy(labels).long()
    tr = np.flatnonzero(~test)
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for b in np.array_split(np.random.default_rng(seed).permutation(tr), len(tr) // 64):
            opt.zero_grad()
            F.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(xt[test]).argmax(1) == yt[test]).float().mean())
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 1, SIZE, SIZE), str(out / "lenet5_digits.onnx"),
                      input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamo=False)
    for sub, idx in (("test", np.flatnonzero(test)), ("calib", tr[:: len(tr) // 50][:50])):
        (out / sub).mkdir(exist_ok=True)
        for i in idx:
            Image.fromarray(pix[i]).save(out / sub / f"{i:04d}.png")
    (out / "test_labels.txt").write_text(
        "".join(f"{i:04d}.png {labels[i]}\n" for i in np.flatnonzero(test)))
    (out / "norm.json").write_text(json.dumps({"mean": mean, "std": std, "torch_top1": acc}))
    print(f"wrote {out}: torch test top-1 {acc:.4f} on {int(test.sum())} digits")


def _tccc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tcc_compiler.cli.main", "-q", *args],
                          capture_output=True, text=True, check=False)


def try_compiled(out: Path) -> int:
    """Compile and evaluate the trained LeNet-5; print one JSON object (see the module doc)."""
    norm = json.loads((out / "norm.json").read_text())
    comp = out / "compiled"
    p = _tccc("compile", str(out / "lenet5_digits.onnx"), "--input", f"{SIZE}x{SIZE}x1",
              "-o", str(comp), "--calib", str(out / "calib"), "--mean", str(norm["mean"]),
              "--std", str(norm["std"]))
    if p.returncode:
        print(p.stderr, file=sys.stderr)
        return p.returncode
    e = _tccc("eval", str(comp), "--images", str(out / "test"), "--labels",
              str(out / "test_labels.txt"), "--check", str(out / "lenet5_digits.onnx"),
              "--json", "--no-progress")
    if e.returncode:
        print(e.stderr, file=sys.stderr)
        return e.returncode
    rep = json.loads((comp / "report.json").read_text())
    print(json.dumps({"weight_bytes": rep["weight_bytes"], "command_bytes": rep["command_bytes"],
                      "weight_compression": rep["weight_compression"],
                      "eval": json.loads(e.stdout)}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["train", "try"])
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.step == "train":
        train(a.out)
        return 0
    return try_compiled(a.out)


if __name__ == "__main__":
    sys.exit(main())
