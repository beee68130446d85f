"""K models of one wiring as one: each layer holds every member's weights, and runs them all at once.

The wiring's own `forward` runs unchanged on a pack: what it does between layers keeps rows and feature
blocks apart, so only the layers must keep each member on its own weights. Two layouts do that:
- `stacked`: weights (K, ...), batches one after another (K*B, T, F): one `bmm` per product over all
  members, the recurrence a Python loop. Fast for many members.
- `wide`: one layer K times as wide, block-diagonal (off-block entries zero, their gradients masked),
  samples side by side (B, T, K*F): PyTorch's fused RNN kernel runs it. Fast for a few members.
Parameters keep their layers' names, so a member's weights and optimiser state come back under its own
model's names (`split`, `join`). `torch.func.vmap` has no batching rule for `aten::lstm` / `aten::gru`.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

Layout = Literal["stacked", "wide"]
WIDE_UP_TO = {"cpu": 128}
"""Per kind of device, the widest pack (members x units) that uses the `wide` layout; wider packs are
`stacked`. Measured on one CPU core (`python -m seqrev.bench --packed`): at 16 units and 16 steps, 3 members
train 2x faster wide than stacked, 10 members 1.1x faster stacked. A device not listed (a GPU: not measured
yet, `scripts/gpu-check --packs` measures both) is always stacked, where no step waits for the host: the
wide layout checks every step that its members' numbers are finite, a host sync (`Pack.finite`)."""
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CELL_OF = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}


def choose_layout(members: int, units: int, device: torch.device) -> Layout:
    return "wide" if members * units <= WIDE_UP_TO.get(device.type, 0) else "stacked"


class PackedLayer(nn.Module):
    """A layer of K members; `split` and `join` convert a parameter-shaped tensor to and from the members'.
    `blocks`: each parameter's (gate groups, rows, columns or None for a bias) in one member."""

    def __init__(self, layers: list[nn.Module], layout: Layout, blocks: dict[str, tuple[int, int, int | None]]):
        super().__init__()
        self.layout, self.blocks = layout, blocks
        self._adopt([dict(layer.named_parameters()) for layer in layers],
                    {name: p.requires_grad for name, p in layers[0].named_parameters()})

    def split(self, name: str, tensor: torch.Tensor) -> list[torch.Tensor]:
        if self.layout == "stacked":
            return list(tensor.unbind(0))
        K, (groups, rows, cols) = self.members, self.blocks[name]
        if cols is None:  # a bias: (groups * K * rows,)
            return [block.reshape(-1) for block in tensor.view(groups, K, rows).unbind(1)]
        view = tensor.view(groups, K, rows, K, cols)
        return [view[:, k, :, k, :].reshape(groups * rows, cols) for k in range(K)]

    def join(self, name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.layout == "stacked":
            return torch.stack(tensors)
        K, (groups, rows, cols) = len(tensors), self.blocks[name]
        if cols is None:
            return torch.stack([t.view(groups, rows) for t in tensors], 1).reshape(-1)
        joined = tensors[0].new_zeros(groups, K, rows, K, cols)
        for k, tensor in enumerate(tensors):
            joined[:, k, :, k, :] = tensor.view(groups, rows, cols)
        return joined.view(groups * K * rows, K * cols)

    def _adopt(self, members: list[dict[str, torch.Tensor]], trainable: dict[str, bool]) -> None:
        """Take the members' tensors (one dict per member, by parameter name) as this layer's parameters."""
        self.members = len(members)
        for name in members[0]:
            joined = self.join(name, [member[name].detach() for member in members]).clone()
            parameter = nn.Parameter(joined, requires_grad=trainable[name])
            if self.layout == "wide" and trainable[name] and self.blocks[name][2] is not None:
                # Off the blocks, no gradient. The mask is a buffer, so it moves with the layer (.to(device)).
                self.register_buffer(f"{name}_mask", self.join(name, [torch.ones_like(m[name]) for m in members]),
                                     persistent=False)
                parameter.register_hook(lambda grad, name=name: grad * getattr(self, f"{name}_mask"))
            elif hasattr(self, f"{name}_mask"):  # repacked from wide to stacked
                delattr(self, f"{name}_mask")
            setattr(self, name, parameter)

    def repack(self, kept: list[int], layout: Layout) -> None:
        """Keep only the members `kept` (in that order), in `layout`."""
        old = dict(self.named_parameters(recurse=False))
        members = [{name: self.split(name, p)[k] for name, p in old.items()} for k in kept]  # in the old layout
        self.layout = layout
        self._adopt(members, {name: p.requires_grad for name, p in old.items()})


class PackedRecurrent(PackedLayer):
    """K one-layer, batch-first recurrent layers (LSTM, GRU or tanh RNN), PyTorch's equations, taking and
    returning what `nn.LSTM` / `nn.GRU` / `nn.RNN` do in the layout's shapes (all hidden states, final state)."""

    def __init__(self, layers: list[nn.RNNBase], layout: Layout) -> None:
        first = layers[0]
        cell = next(cell for base, cell in CELL_OF.items() if isinstance(first, base))
        if cell == "rnn" and first.nonlinearity != "tanh":
            raise ValueError("only tanh RNN layers can be packed")
        gates, units, inputs = GATES[cell], first.hidden_size, first.input_size
        super().__init__(layers, layout, {"weight_ih_l0": (gates, units, inputs), "weight_hh_l0": (gates, units, units),
                                          "bias_ih_l0": (gates, units, None), "bias_hh_l0": (gates, units, None)})
        self.cell, self.hidden_size = cell, units

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None):
        if self.layout == "wide":
            return self._fused(x, hx)
        return self._stepped(x, hx)

    def _fused(self, x, hx):
        """The wide layer through PyTorch's own recurrent kernel."""
        weights = [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]
        if hx is None:
            zeros = x.new_zeros(1, x.shape[0], self.members * self.hidden_size)
            hx = (zeros, zeros) if self.cell == "lstm" else zeros
        if self.cell == "lstm":
            out, h, c = torch.lstm(x, hx, weights, True, 1, 0.0, self.training, False, True)
            return out, (h, c)
        run = torch.gru if self.cell == "gru" else torch.rnn_tanh
        return run(x, hx, weights, True, 1, 0.0, self.training, False, True)

    def _stepped(self, x, hx):
        """The stacked layer: one `bmm` per step for all members."""
        K, H = self.members, self.hidden_size
        rows, T, _ = x.shape
        B = rows // K
        # Every step's input product at once, (K, B*T, I) @ (K, I, G*H), laid out step-major so that each
        # step's slice is contiguous (unbound once: a slice taken per step would cost a full-size gradient
        # per step in backward); then one (K, B, H) @ (K, H, G*H) per step. The second bias of an LSTM or
        # RNN is zero and frozen (seqrev.layers), so it joins the first here; a GRU's stays in its place.
        bias = self.bias_ih_l0 if self.cell == "gru" else self.bias_ih_l0 + self.bias_hh_l0
        inputs = torch.baddbmm(bias.unsqueeze(1), x.reshape(K, B * T, -1), self.weight_ih_l0.transpose(1, 2))
        inputs = inputs.view(K, B, T, -1).permute(2, 0, 1, 3).contiguous().unbind(0)
        w_hh = self.weight_hh_l0.transpose(1, 2)
        if self.cell == "lstm":
            h, c = (s.view(K, B, H) for s in hx) if hx is not None else (x.new_zeros(K, B, H),) * 2
        else:
            h = hx.view(K, B, H) if hx is not None else x.new_zeros(K, B, H)
        outputs = []
        for x_t in inputs:
            if self.cell == "lstm":  # gates in PyTorch's order: input, forget, cell, output
                i, f, g, o = torch.baddbmm(x_t, h, w_hh).chunk(4, -1)  # chunk: one gradient copy in backward
                c = torch.addcmul(f.sigmoid() * c, i.sigmoid(), g.tanh())
                h = o.sigmoid() * c.tanh()
            elif self.cell == "gru":  # the reset gate applies to the recurrent product with its bias
                x_rz, x_n = x_t.split([2 * H, H], -1)
                h_rz, h_n = torch.baddbmm(self.bias_hh_l0.unsqueeze(1), h, w_hh).split([2 * H, H], -1)
                r, z = (x_rz + h_rz).sigmoid().chunk(2, -1)
                n = torch.tanh(torch.addcmul(x_n, r, h_n))
                h = torch.addcmul(n, z, h - n)
            else:
                h = torch.baddbmm(x_t, h, w_hh).tanh()
            outputs.append(h)
        all_h = torch.stack(outputs, 2).view(rows, T, H)
        final_h = h.reshape(1, rows, H)
        return all_h, ((final_h, c.reshape(1, rows, H)) if self.cell == "lstm" else final_h)


class PackedLinear(PackedLayer):
    """K dense layers applied at every step, each member's rows (stacked) or features (wide) on its own."""

    def __init__(self, layers: list[nn.Linear], layout: Layout) -> None:
        rows, cols = layers[0].out_features, layers[0].in_features
        super().__init__(layers, layout, {"weight": (1, rows, cols), "bias": (1, rows, None)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "wide":
            return nn.functional.linear(x, self.weight, self.bias)
        flat = x.reshape(self.members, -1, x.shape[-1])
        return torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2)).view(*x.shape[:-1], -1)


PACKED = {nn.RNNBase: PackedRecurrent, nn.Linear: PackedLinear}


def pack_models(models: list[nn.Module], layout: Layout) -> nn.Module:
    """One model that runs `models` (of one class and size) side by side, their weights copied.

    Every layer with parameters is replaced by its packed kind; ValueError for a layer that has none."""
    packed = copy.deepcopy(models[0])
    for name, child in models[0].named_children():
        if not any(True for _ in child.parameters()):
            continue
        kind = next((packed_kind for base, packed_kind in PACKED.items() if isinstance(child, base)), None)
        if kind is None or any(True for _ in child.children()):
            raise ValueError(f"{type(child).__name__} layers cannot be packed")
        setattr(packed, name, kind([getattr(model, name) for model in models], layout))
    packed.layout = layout
    return packed


def packed_layers(packed: nn.Module) -> dict[str, PackedLayer]:
    return {name: module for name, module in packed.named_modules() if isinstance(module, PackedLayer)}


def member_state_dicts(packed: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Every member's weights under the names its own model uses (copies), split once."""
    members: list[dict[str, torch.Tensor]] = []
    for prefix, layer in packed_layers(packed).items():
        for name, tensor in layer.named_parameters(recurse=False):
            parts = layer.split(name, tensor.detach())
            members += [{} for _ in range(len(parts) - len(members))]
            for state, part in zip(members, parts):
                state[f"{prefix}.{name}"] = part.clone()
    return members


def _owner(packed: nn.Module, parameter: nn.Parameter) -> tuple[PackedLayer, str]:
    return next((layer, name) for layer in packed_layers(packed).values()
                for name, own in layer.named_parameters(recurse=False) if own is parameter)


def split_like(packed: nn.Module, parameter: nn.Parameter, tensor: torch.Tensor) -> list[torch.Tensor]:
    """A tensor shaped like one of the pack's parameters (its gradient, its optimiser state), per member."""
    layer, name = _owner(packed, parameter)
    return layer.split(name, tensor)


def member_optimizer_states(packed: nn.Module, optimizer: torch.optim.Optimizer, members: int) -> list[dict]:
    """Each member's optimiser state, as an optimiser over its own model would hold it (state shaped like a
    parameter split per member, the rest shared)."""
    state, params = optimizer.state_dict(), optimizer.param_groups[0]["params"]
    split = {index: {key: split_like(packed, params[index], value) if torch.is_tensor(value)
                     and value.shape == params[index].shape else [value] * members for key, value in entry.items()}
             for index, entry in state["state"].items()}
    # Copies: the optimiser's own tensors change at its next step, and a member's view of them would save
    # every member's storage in its checkpoint.
    return [{"state": {index: {key: parts[k].clone() if torch.is_tensor(parts[k]) else parts[k]
                               for key, parts in entry.items()} for index, entry in split.items()},
             "param_groups": state["param_groups"]} for k in range(members)]


def load_member_optimizer_states(packed: nn.Module, optimizer: torch.optim.Optimizer, states: list[dict]) -> None:
    """A pack's optimiser from its members' own states, in the pack's order of members."""
    params, stacked = optimizer.param_groups[0]["params"], {}
    for index, entry in states[0]["state"].items():
        layer, name = _owner(packed, params[index])
        stacked[index] = {key: layer.join(name, [s["state"][index][key] for s in states])
                          if torch.is_tensor(value) and value.shape != () else value for key, value in entry.items()}
    optimizer.load_state_dict({"state": stacked, "param_groups": states[0]["param_groups"]})


def repack(packed: nn.Module, kept: list[int], layout: Layout) -> None:
    """The pack, in place, with only the members `kept` (in that order) and in `layout`."""
    for layer in packed_layers(packed).values():
        layer.repack(kept, layout)
    packed.layout = layout


def rows_in(inputs: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The members' batches (K, B, T, F) as the pack reads them."""
    K, B, T, F = inputs.shape
    if layout == "stacked":
        return inputs.reshape(K * B, T, F)
    return inputs.permute(1, 2, 0, 3).reshape(B, T, K * F)


def rows_out(outputs: torch.Tensor, members: int, layout: Layout) -> torch.Tensor:
    """The pack's outputs as the members' (K, B, T, C)."""
    if layout == "stacked":
        return outputs.view(members, -1, *outputs.shape[1:])
    B, T, _ = outputs.shape
    return outputs.view(B, T, members, -1).permute(2, 0, 1, 3)


class Pack:
    """A pack in training: the packed model of K members, its optimiser and schedule, and their layout."""

    def __init__(self, models: list[nn.Module], device: torch.device, optimizer_states: list[dict] | None = None,
                 schedule: dict | None = None, layout: Layout | None = None) -> None:
        self.template = models[0]  # what every member shares: loss, padding, optimiser settings
        self.members, self.device, self.fixed_layout = len(models), device, layout
        self.layout = layout or choose_layout(self.members, self.template.units, device)
        self.model = pack_models(models, self.layout).to(device).train()
        self._optimize(optimizer_states, schedule)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every member's logits (K, N, T, C) for its inputs (K, N, T, C)."""
        return rows_out(self.model(rows_in(inputs, self.layout)), self.members, self.layout)

    def weights(self) -> list[dict[str, torch.Tensor]]:
        return member_state_dicts(self.model)

    def optimizer_states(self) -> list[dict]:
        return member_optimizer_states(self.model, self.optimizer, self.members)

    def finite(self, values: torch.Tensor | None = None) -> bool:
        """Whether `values` (by default every gradient) are finite, in the wide layout (one host sync), where
        a member's infinite or NaN numbers would spread to the others through the zeros between their blocks
        (0 * inf is NaN). If not, the pack is stacked from here on, where each member's numbers stay its own."""
        if self.layout != "wide":
            return True
        if values is None:
            values = torch.stack([p.grad.sum() for p in self.model.parameters() if p.grad is not None])
        if bool(torch.isfinite(values).all()):
            return True
        self.fixed_layout = "stacked"
        self.keep(list(range(self.members)))
        return False

    def keep(self, kept: list[int]) -> None:
        """Only the members `kept` (in that order) from here on, their optimiser state and the schedule's
        kept, in the layout for their number (or the one fixed: stacked for good once isolated)."""
        states = self.optimizer_states()
        schedule = self.scheduler.state_dict() if self.scheduler is not None else None
        self.layout = self.fixed_layout or choose_layout(len(kept), self.template.units, self.device)
        repack(self.model, kept, self.layout)
        self.members = len(kept)
        self._optimize([states[k] for k in kept], schedule)

    def _optimize(self, states: list[dict] | None, schedule: dict | None) -> None:
        self.optimizer, self.scheduler = self.template.build_optimizer(self.model)
        if states is not None:
            load_member_optimizer_states(self.model, self.optimizer, states)
        if schedule is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(schedule)


def member_bytes(model: nn.Module, train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...],
                 batch_size: int) -> int:
    """An upper estimate of the device memory one member of a stacked pack takes: its weights with their
    gradients and Adam's two moments; its training split twice (with the epoch's shuffled copy) and its
    validation split; what its training batch's forward pass keeps for backward (measured here, on a pack
    of one), and as much per example again for the validation pass."""
    def size(tensor: torch.Tensor) -> int:
        return tensor.numel() * tensor.element_size()

    kept: set[tuple[int, int]] = set()  # (address, bytes): a tensor saved twice, or by several views, counts once

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        kept.add((tensor.data_ptr(), size(tensor)))
        return tensor

    pack = Pack([model], torch.device("cpu"), layout="stacked")
    inputs, targets = (t[None, :batch_size] for t in train)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        pack.template.loss(pack(inputs), targets, pack.template.scored(targets), members=True)
    per_example = sum(b for _, b in kept) / inputs.shape[1]
    weights = 4 * sum(size(p) for p in model.parameters())
    return int(weights + 2 * sum(map(size, train)) + sum(map(size, val)) + per_example * (batch_size + len(val[0])))
