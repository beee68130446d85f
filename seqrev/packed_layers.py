"""K models of one wiring as one: their layers' weights stacked, each layer run as batched products.

A pack's batch is its members' batches one after another, (K*B, T, F): member k owns rows
k*B..(k+1)*B. The wiring's own `forward` runs unchanged on it, because everything it does between
layers (take the last step, repeat it, pass a final state on) treats rows independently; only the
layers themselves must keep each member's rows on that member's weights, which is what the classes
here do with one `bmm` per product instead of K small ones. The stacked parameters keep the names of
the layers they replace, with the member as their first dimension, so a member's weights are
`tensor[k]` under the names its own model uses (`member_state_dict`).

`torch.func.vmap` cannot do this: it has no batching rule for `aten::lstm` / `aten::gru`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _stack(tensors: list[torch.Tensor], trainable: bool) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone(), requires_grad=trainable)


class PackedRecurrent(nn.Module):
    """K one-layer, batch-first recurrent layers (LSTM, GRU or tanh RNN) with PyTorch's equations.

    Takes and returns what `nn.LSTM` / `nn.GRU` / `nn.RNN` do, with the members' rows one after another:
    input (K*B, T, I) -> (all hidden states (K*B, T, H), final state: (h, c) or h, each (1, K*B, H)).
    """

    def __init__(self, layers: list[nn.RNNBase]) -> None:
        super().__init__()
        first = layers[0]
        self.cell = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[next(
            base for base in (nn.LSTM, nn.GRU, nn.RNN) if isinstance(first, base))]
        if self.cell == "rnn" and first.nonlinearity != "tanh":
            raise ValueError("a packed RNN layer is tanh's")
        self.members, self.hidden_size = len(layers), first.hidden_size
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            trainable = getattr(first, name).requires_grad
            setattr(self, name, _stack([getattr(layer, name) for layer in layers], trainable))

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None):
        K, H = self.members, self.hidden_size
        rows, T, _ = x.shape
        B = rows // K
        # Every step's input product at once: (K, B*T, I) @ (K, I, G*H); then one (K, B, H) @ (K, H, G*H) per step.
        inputs = torch.baddbmm(self.bias_ih_l0.unsqueeze(1), x.reshape(K, B * T, -1),
                               self.weight_ih_l0.transpose(1, 2)).view(K, B, T, -1)
        w_hh, b_hh = self.weight_hh_l0.transpose(1, 2), self.bias_hh_l0.unsqueeze(1)
        if self.cell == "lstm":
            h, c = (s.view(K, B, H) for s in hx) if hx is not None else (x.new_zeros(K, B, H),) * 2
        else:
            h = hx.view(K, B, H) if hx is not None else x.new_zeros(K, B, H)
        outputs = []
        for t in range(T):
            recurrent = torch.baddbmm(b_hh, h, w_hh)
            if self.cell == "lstm":
                i, f, g, o = (inputs[:, :, t] + recurrent).chunk(4, -1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            elif self.cell == "gru":  # PyTorch's GRU: the reset gate applies after the recurrent product
                x_r, x_z, x_n = inputs[:, :, t].chunk(3, -1)
                h_r, h_z, h_n = recurrent.chunk(3, -1)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)
                h = n + z * (h - n)
            else:
                h = torch.tanh(inputs[:, :, t] + recurrent)
            outputs.append(h)
        all_h = torch.stack(outputs, 2).view(rows, T, H)
        final_h = h.reshape(1, rows, H)
        return all_h, ((final_h, c.reshape(1, rows, H)) if self.cell == "lstm" else final_h)


class PackedLinear(nn.Module):
    """K dense layers applied at every step: (K*B, ..., I) -> (K*B, ..., O), each member's rows on its own."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.members = len(layers)
        self.weight = _stack([layer.weight for layer in layers], layers[0].weight.requires_grad)
        self.bias = _stack([layer.bias for layer in layers], layers[0].bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = self.members
        flat = x.reshape(K, -1, x.shape[-1])
        return torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2)).view(*x.shape[:-1], -1)


PACKED = {nn.LSTM: PackedRecurrent, nn.GRU: PackedRecurrent, nn.RNN: PackedRecurrent, nn.Linear: PackedLinear}


def pack_models(models: list[nn.Module]) -> nn.Module:
    """One model that runs `models` (of one class and size) side by side; their weights copied, stacked.

    Every layer with parameters is replaced by its packed kind; ValueError for a layer that has none."""
    packed = copy.deepcopy(models[0])
    for name, child in models[0].named_children():
        if not any(True for _ in child.parameters()):
            continue
        kind = next((packed_kind for base, packed_kind in PACKED.items() if isinstance(child, base)), None)
        if kind is None or any(True for _ in child.children()):
            raise ValueError(f"{type(child).__name__} layers cannot be packed")
        setattr(packed, name, kind([getattr(model, name) for model in models]))
    return packed


def member_state_dict(packed: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Member k's weights under the names its own model uses."""
    return {name: tensor[k].clone() for name, tensor in packed.state_dict().items()}


def keep_members(packed: nn.Module, keep: list[int]) -> dict[nn.Parameter, nn.Parameter]:
    """Shrink a pack to the members `keep` (their order), in place; maps each old parameter to its new one."""
    index = torch.tensor(keep, device=next(packed.parameters()).device)
    replaced = {}
    for module in packed.modules():
        if not isinstance(module, (PackedRecurrent, PackedLinear)):
            continue
        module.members = len(keep)
        for name, old in list(module.named_parameters(recurse=False)):
            new = nn.Parameter(old.detach().index_select(0, index), requires_grad=old.requires_grad)
            setattr(module, name, new)
            replaced[old] = new
    return replaced
