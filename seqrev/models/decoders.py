"""Beyond the tutorial: an encoder-decoder, with and without attention.

The tutorial's wirings emit every output from what layer 1 left behind, in one pass. Here a decoder
LSTM emits one token at a time, fed the token before it (a start token first): while training it is
fed the true previous token (teacher forcing), at validation, test and prediction its own previous
prediction (greedy decoding), so reported accuracy is what the model does on its own.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from seqrev.layers import dense_layer
from seqrev.models.base import Seq2SeqModel

AttentionKind = Literal["multiplicative", "additive"]
ATTENTION_KINDS = ("multiplicative", "additive")


class EncoderDecoder(Seq2SeqModel):
    """Encoder LSTM -> final (h, c) -> decoder LSTM fed its previous token -> per-step Dense."""

    name = "encoder_decoder"
    keras_parameters = 3690

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start_token = self.n_classes  # one more symbol than the data has: "begin"
        self.encoder = self.recurrent(self.n_classes)
        self.decoder = self.recurrent(self.n_classes + 1)
        self.output_layer = self.dense()

    def read_out(self, decoder_h: torch.Tensor, encoder_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the output layer sees for decoder states (B, S, H); attention also looks at encoder_h."""
        return decoder_h, None

    def _previous_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(tokens, self.n_classes + 1).float()

    # teacher forcing: the decoder reads [start, y_1, ..., y_{T-1}] in one pass
    def training_forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        encoder_h, state = self.encoder(inputs)
        start = torch.full_like(targets[:, :1], self.start_token)
        decoder_h, _ = self.decoder(self._previous_tokens(torch.cat([start, targets[:, :-1]], 1)), state)
        return self.output_layer(self.read_out(decoder_h, encoder_h)[0])

    def scoring_logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Accuracies come from greedy decoding; the loss is the teacher-forced objective, as seq2seq
        # toolkits report it. A greedy loss would punish one early mistake at every later step, and
        # early stopping on it stops decoders long before they have learned.
        return self(inputs), self.training_forward(inputs, targets)

    # greedy decoding: each step reads the previous step's prediction; the targets are never seen
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.decode(inputs)[0]

    def decode(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Greedy logits (B, T, F) and, with attention, the weights (B, T_out, T_in)."""
        encoder_h, state = self.encoder(inputs)
        token = torch.full((len(inputs), 1), self.start_token, dtype=torch.long, device=inputs.device)
        logits, weights = [], []
        for _ in range(self.timesteps):
            decoder_h, state = self.decoder(self._previous_tokens(token), state)
            features, step_weights = self.read_out(decoder_h, encoder_h)
            logits.append(self.output_layer(features))
            weights.append(step_weights)
            token = logits[-1].argmax(-1)
        return torch.cat(logits, 1), (torch.cat(weights, 1) if weights[0] is not None else None)


class Attention(EncoderDecoder):
    """The encoder-decoder, where every decoder step also attends over all encoder states (Luong-style).

    `attention="multiplicative"`: score(d, e) = d · W e (Luong's "general"); `"additive"`:
    score(d, e) = v · tanh(W1 d + W2 e) (Bahdanau's). The output layer reads tanh(Wc [context; d]).
    """

    name = "attention"
    keras_parameters = 4474

    def __init__(self, attention: AttentionKind = "multiplicative", **kwargs) -> None:
        super().__init__(**kwargs)
        self.attention = attention
        units = self.units
        if attention == "multiplicative":
            self.score_weight = nn.Linear(units, units, bias=False)
        else:
            self.score_query, self.score_key = nn.Linear(units, units, bias=False), nn.Linear(units, units)
            self.score_vector = nn.Linear(units, 1, bias=False)
        self.combine = dense_layer(2 * units, units, self.init)

    def scores(self, decoder_h: torch.Tensor, encoder_h: torch.Tensor) -> torch.Tensor:
        """(B, S, H) x (B, T, H) -> (B, S, T)."""
        if self.attention == "multiplicative":
            return decoder_h @ self.score_weight(encoder_h).transpose(1, 2)
        summed = self.score_query(decoder_h).unsqueeze(2) + self.score_key(encoder_h).unsqueeze(1)
        return self.score_vector(torch.tanh(summed)).squeeze(-1)

    def read_out(self, decoder_h: torch.Tensor, encoder_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.scores(decoder_h, encoder_h), dim=-1)  # over encoder steps
        context = weights @ encoder_h
        return torch.tanh(self.combine(torch.cat([context, decoder_h], -1))), weights

    def attention_weights(self, inputs: torch.Tensor) -> torch.Tensor:
        """Greedy decoding's attention weights (B, T_out, T_in), for pictures."""
        with self.evaluating():
            return self.decode(inputs.to(self.device))[1]
