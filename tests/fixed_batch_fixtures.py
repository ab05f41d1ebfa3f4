"""Tiny ONNX CNNs on scikit-learn's digits exported with a static batch of 1 (opset 13), as
model zoos ship them: one whose graph keeps the batch (Flatten), one whose Reshape hardcodes it."""

from __future__ import annotations

from pathlib import Path


def _trained_cnn(hardcoded_reshape: bool):
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    class TinyCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.head = nn.Linear(8 * 64, 10)

        def forward(self, x):
            features = torch.relu(self.conv(x))
            # reshape(1, -1) writes the batch of 1 into the graph; flatten(1) keeps it free
            flat = features.reshape(1, -1) if hardcoded_reshape else features.flatten(1)
            return self.head(flat)

    torch.manual_seed(0)
    model = TinyCnn()
    if hardcoded_reshape:  # only its graph matters: it is refused before any run
        return model.eval()
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def fixed_batch_cnn(folder: Path, hardcoded_reshape: bool = False) -> Path:
    """`fixed1.onnx` (or `fixed1_reshape.onnx`): input (1, 1, 8, 8), opset 13, TorchScript export."""
    import torch

    model = _trained_cnn(hardcoded_reshape)
    path = folder / ("fixed1_reshape.onnx" if hardcoded_reshape else "fixed1.onnx")
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
    )
    return path
