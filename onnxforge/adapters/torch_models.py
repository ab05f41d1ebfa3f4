"""PyTorch architectures that recipes can name (random init, no download)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from onnxforge.adapters.architectures import HF_SEQUENCE_CLASSIFIER
from onnxforge.adapters.hf_models import hf_sequence_classifier


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a max-pool and two linear layers: enough for 8x8 digits."""

    def __init__(
        self, sample_shape: tuple[int, ...], num_classes: int, channels: int = 16, hidden: int = 64
    ) -> None:
        super().__init__()
        in_channels, height, width = sample_shape
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = channels * 2 * (height // 2) * (width // 2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """A plain multi-layer perceptron over flattened features."""

    def __init__(
        self, sample_shape: tuple[int, ...], num_classes: int, hidden: int = 64, layers: int = 2
    ) -> None:
        super().__init__()
        width = math.prod(sample_shape)
        blocks: list[nn.Module] = [nn.Flatten()]
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class TokenTransformerSizes:
    """A TokenTransformer's sizes: the recipe's kwargs (all optional)."""

    vocab_size: int = 64
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    ff: int = 128


class TokenTransformer(nn.Module):
    """Token ids -> embedding + learned positions -> TransformerEncoder -> mean pool -> classes."""

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        num_classes: int,
        sizes: TokenTransformerSizes | None = None,
    ) -> None:
        super().__init__()
        sizes = sizes or TokenTransformerSizes()
        (max_len,) = sample_shape
        self.embed = nn.Embedding(sizes.vocab_size, sizes.d_model)
        self.position = nn.Parameter(torch.randn(1, max_len, sizes.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            sizes.d_model, sizes.heads, sizes.ff, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, sizes.layers, enable_nested_tensor=False)
        self.head = nn.Linear(sizes.d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens) + self.position[:, : tokens.shape[1]]
        return self.head(self.encoder(hidden).mean(dim=1))


def token_transformer(
    sample_shape: tuple[int, ...], num_classes: int, **sizes: int
) -> TokenTransformer:
    """The recipe's TokenTransformer: kwargs vocab_size, d_model, heads, layers, ff."""
    return TokenTransformer(sample_shape, num_classes, TokenTransformerSizes(**sizes))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "mlp": MLP,
    "token_transformer": token_transformer,
    # imports `transformers` only when built (the optional extra)
    HF_SEQUENCE_CLASSIFIER: hf_sequence_classifier,
}
