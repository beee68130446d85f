"""A wiring of your own: model 5 (both_outputs) reading its input backwards.

Reversing the source sequence is the classic trick of Sutskever et al. (2014): the first output now
sits next to the input it depends on, so the reversal problem becomes a copy.
"""

import torch

from seqrev.models.base import Seq2SeqModel


class ReversedInput(Seq2SeqModel):
    keras_parameters = 4010  # two LSTMs and a Dense, as both_outputs

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layer1 = self.recurrent(self.n_classes)
        self.layer2 = self.recurrent(self.units)
        self.output_layer = self.dense()

    # x reversed -> LSTM -> all_h -> LSTM(initial_state=final) -> all_h2 -> TimeDistributed(Dense)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_h, final = self.layer1(x.flip(1))
        all_h2, _ = self.layer2(all_h, final)
        return self.output_layer(all_h2)
