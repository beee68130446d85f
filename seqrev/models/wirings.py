"""The tutorial's five ways of wiring LSTM layers (its models 1-5), one short class each.

Every `forward` takes one-hot inputs (B, T, F) and returns logits (B, T, F); the comment above it
is the tutorial's diagram. `final` is layer 1's final state — (h, c) for the default LSTM cell, h
for `cell=gru` or `cell=rnn` — `all_h` its hidden state at every step, `last_h` its hidden state at
the last step.
"""

from __future__ import annotations

import torch

from seqrev.layers import repeat
from seqrev.models.base import Seq2SeqModel


class TwoLayers(Seq2SeqModel, abstract=True):
    """Layer 1 reads the one-hot input, layer 2 something of layer 1's, a Dense maps to symbols."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer1 = self.recurrent(self.n_classes)
        self.layer2 = self.recurrent(self.units)
        self.output_layer = self.dense()


class SingleDefault(Seq2SeqModel):
    """Model 1: one LSTM; its last hidden state, repeated T times, feeds a per-step Dense."""

    name = "single_default"
    tutorial_model = 1
    packs = True
    keras_parameters = 1898

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer1 = self.recurrent(self.n_classes)
        self.output_layer = self.dense()

    # x -> LSTM -> last_h -> RepeatVector(T) -> Dense
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_h, _ = self.layer1(x)
        return self.output_layer(repeat(all_h[:, -1], self.timesteps))


class StackedDefault(TwoLayers):
    """Model 2: two LSTMs joined by repeated last hidden states; layer 2 starts from zeros."""

    name = "stacked_default"
    tutorial_model = 2
    packs = True
    keras_parameters = 4010

    # x -> LSTM -> last_h -> RepeatVector(T) -> LSTM -> last_h -> RepeatVector(T) -> Dense
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_h, _ = self.layer1(x)
        all_h2, _ = self.layer2(repeat(all_h[:, -1], self.timesteps))
        return self.output_layer(repeat(all_h2[:, -1], self.timesteps))


class ReturnSequences(TwoLayers):
    """Model 3: layer 2 reads every hidden state of layer 1; layer 2 starts from zeros."""

    name = "return_sequences"
    tutorial_model = 3
    packs = True
    keras_parameters = 4010

    # x -> LSTM -> all_h -> LSTM -> all_h2 -> TimeDistributed(Dense)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_h, _ = self.layer1(x)
        all_h2, _ = self.layer2(all_h)
        return self.output_layer(all_h2)


class ReturnState(TwoLayers):
    """Model 4: layer 2 reads layer 1's last hidden state repeated, and starts from its final (h, c)."""

    name = "return_state"
    tutorial_model = 4
    packs = True
    keras_parameters = 4010

    # x -> LSTM -> last_h -> RepeatVector(T) -> LSTM(initial_state=final) -> all_h2 -> TimeDistributed(Dense)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_h, final = self.layer1(x)
        all_h2, _ = self.layer2(repeat(all_h[:, -1], self.timesteps), final)
        return self.output_layer(all_h2)


class BothOutputs(TwoLayers):
    """Model 5: layer 2 reads every hidden state of layer 1 *and* starts from its final (h, c)."""

    name = "both_outputs"
    tutorial_model = 5
    packs = True
    keras_parameters = 4010

    # x -> LSTM -> all_h -> LSTM(initial_state=final) -> all_h2 -> TimeDistributed(Dense)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_h, final = self.layer1(x)
        all_h2, _ = self.layer2(all_h, final)
        return self.output_layer(all_h2)

