"""Recurrent and dense layers that count and start like Keras' own.

Trainable parameters per layer (inputs i, units u), equal to Keras':
- LSTM: 4 * (u * (i + u) + u). PyTorch's LSTM has two bias vectors (`bias_ih`, `bias_hh`) that only
  ever appear summed, where Keras has one: `bias_hh` is kept at zero and frozen.
- GRU: 3 * (u * (i + u) + 2 * u). This is Keras' default GRU (`reset_after=True`), which has an input
  and a recurrent bias exactly like PyTorch's GRU (whose candidate state applies the reset gate after
  the recurrent product, as `reset_after` does): both biases train.
- SimpleRNN (`cell=rnn`, tanh): u * (i + u) + u, with `bias_hh` frozen at zero as for the LSTM.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Init = Literal["keras", "torch"]
Cell = Literal["lstm", "gru", "rnn"]
INITS = ("keras", "torch")
CELLS = ("lstm", "gru", "rnn")


class _Float32UnderAutocast:
    """Recurrent layers compute in float32 even under mixed precision (`trainer.precision=bf16-mixed`).

    Autocast would otherwise pick the RNN's dtype itself: on CUDA its cuDNN RNN wrapper
    (aten/src/ATen/autocast_mode.cpp, `_cudnn_rnn`) casts to float16 whatever autocast dtype was asked
    for, and float16 without loss scaling underflows gradients; on the CPU the oneDNN RNN runs in
    bfloat16. The recurrence is where rounding compounds step after step, and at these sizes it is
    cheap, so it stays in float32; the dense layers and everything else still run in bfloat16.
    """

    def forward(self, input, hx=None):
        device = input.device.type
        if not torch.is_autocast_enabled(device):
            return super().forward(input, hx)
        if hx is not None:
            hx = tuple(h.float() for h in hx) if isinstance(hx, tuple) else hx.float()
        with torch.autocast(device, enabled=False):
            return super().forward(input.float(), hx)


class LSTM(_Float32UnderAutocast, nn.LSTM):
    pass


class GRU(_Float32UnderAutocast, nn.GRU):
    pass


class RNN(_Float32UnderAutocast, nn.RNN):
    pass


_LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def recurrent_layer(input_size: int, units: int, init: Init = "keras", cell: Cell = "lstm") -> nn.RNNBase:
    """A batch-first, one-layer recurrent layer of `cell` kind with Keras' parameter count.

    Its final state is `(h, c)` for an LSTM and `h` for a GRU or plain RNN; either can be passed
    straight on as another layer's initial state.
    """
    layer = _LAYERS[cell](input_size, units, batch_first=True)
    single_bias = cell != "gru"
    with torch.no_grad():
        if init == "keras":
            # Keras: Glorot-uniform kernel, orthogonal recurrent kernel, zero biases; an LSTM's forget
            # gate bias starts at 1 (both libraries order its gates input, forget, cell, output).
            nn.init.xavier_uniform_(layer.weight_ih_l0)
            nn.init.orthogonal_(layer.weight_hh_l0)
            layer.bias_ih_l0.zero_()
            layer.bias_hh_l0.zero_()
            if cell == "lstm":
                layer.bias_ih_l0[units:2 * units] = 1.0
        elif single_bias:  # PyTorch's own init spread over two biases; fold them into the one that trains
            layer.bias_ih_l0 += layer.bias_hh_l0
        if single_bias:
            layer.bias_hh_l0.zero_()
    if single_bias:
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
