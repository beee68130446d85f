"""Recurrent and dense layers that count and start like Keras' own.

Keras' LSTM has one bias vector per gate; PyTorch's has two (`bias_ih` and `bias_hh`) that only ever
appear summed. Freezing `bias_hh` at zero keeps the function identical and the trainable parameter
count equal to Keras': 4 * (units * (inputs + units) + units).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Init = Literal["keras", "torch"]
INITS = ("keras", "torch")


def lstm_layer(input_size: int, units: int, init: Init = "keras") -> nn.LSTM:
    """A batch-first, one-layer LSTM with a single trainable bias per gate."""
    layer = nn.LSTM(input_size, units, batch_first=True)
    with torch.no_grad():
        if init == "keras":
            # Keras: Glorot-uniform kernel, orthogonal recurrent kernel, zero bias but forget gate 1.
            # Both libraries order the gates (input, forget, cell, output).
            nn.init.xavier_uniform_(layer.weight_ih_l0)
            nn.init.orthogonal_(layer.weight_hh_l0)
            layer.bias_ih_l0.zero_()
            layer.bias_ih_l0[units:2 * units] = 1.0
        else:  # PyTorch's own init spread over two biases; fold them into the one that trains
            layer.bias_ih_l0 += layer.bias_hh_l0
        layer.bias_hh_l0.zero_()
    layer.bias_hh_l0.requires_grad_(False)
    return layer


def dense_layer(units: int, n_out: int, init: Init = "keras") -> nn.Linear:
    """Per-step output layer (Keras' TimeDistributed Dense): logits, softmax lives in the loss."""
    layer = nn.Linear(units, n_out)
    if init == "keras":
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer


def repeat(vector: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Keras' RepeatVector: (B, H) -> (B, T, H), a view, no copy."""
    return vector.unsqueeze(1).expand(-1, timesteps, -1)


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
