"""Tiny bring-your-own models written to tmp_path: a PyTorch module file, a .keras file, an ONNX file."""

from __future__ import annotations

import textwrap
from pathlib import Path

MODULE = textwrap.dedent("""
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, hidden: int = 32):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)


    def make_tiny(hidden: int = 32):
        return TinyNet(hidden)
""")


def torch_module(folder: Path, hidden: int = 32) -> Path:
    """Write `byo_models.py` and a trained-enough state_dict for it; returns the checkpoint."""
    import importlib
    import sys

    import torch

    (folder / "byo_models.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop("byo_models", None)
        module = importlib.import_module("byo_models")
        model = _fit_torch(module.TinyNet(hidden))
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("byo_models", None)
    torch.save(model.state_dict(), folder / "tiny.pt")
    return folder / "tiny.pt"


def _fit_torch(model):
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def onnx_file(folder: Path, external_data: bool = True) -> Path:
    """A trained TinyNet exported by the dynamo exporter, weights in `<file>.onnx.data`."""
    import importlib
    import sys

    import torch

    torch_module(folder)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("byo_models")
        model = module.TinyNet()
        model.load_state_dict(torch.load(folder / "tiny.pt", weights_only=True))
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("byo_models", None)
    path = folder / "tiny.onnx"
    torch.onnx.export(
        model.eval(),
        (torch.zeros(4, 1, 8, 8),),
        str(path),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=external_data,
    )
    return path


def keras_file(folder: Path) -> Path:
    """A trained Keras Sequential CNN saved as a .keras file."""
    import numpy as np
    from sklearn.datasets import load_digits

    from onnxforge.adapters.keras import KerasAdapter

    KerasAdapter().seed(0)
    import keras

    from onnxforge.adapters.keras_models import keras_cnn

    digits = load_digits()
    model = keras_cnn((8, 8, 1), 10, channels=8, hidden=32)
    model.compile(
        optimizer=keras.optimizers.Adam(0.005),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        (digits.data / 16.0).reshape(-1, 8, 8, 1).astype(np.float32),
        digits.target,
        epochs=5,
        batch_size=64,
        verbose=0,
    )
    path = folder / "tiny.keras"
    model.save(path)
    return path


TWO_INPUT_MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    class TwoInputNet(nn.Module):
        """Digits as two inputs: the top and the bottom half of the image."""

        def __init__(self, hidden: int = 32):
            super().__init__()
            self.top_branch = nn.Linear(32, hidden)
            self.bottom_branch = nn.Linear(32, hidden)
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden, 10))

        def forward(self, top, bottom):
            return self.head(torch.cat([self.top_branch(top), self.bottom_branch(bottom)], dim=1))
''')


def two_input_data(folder: Path) -> Path:
    """`two_input.py` (the module) and `halves.npz` (arrays top, bottom, label) in `folder`."""
    import numpy as np
    from sklearn.datasets import load_digits

    (folder / "two_input.py").write_text(TWO_INPUT_MODULE)
    digits = load_digits()
    path = folder / "halves.npz"
    np.savez(path, top=digits.data[:, :32], bottom=digits.data[:, 32:], label=digits.target)
    return path
