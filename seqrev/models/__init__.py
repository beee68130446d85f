"""Models: a LightningModule base and one short class per wiring of recurrent layers."""

from seqrev.models import decoders, wirings  # noqa: F401 - defining seqrev's wirings registers them
from seqrev.models.base import WIRINGS, Seq2SeqModel

__all__ = ["Seq2SeqModel", "WIRINGS"]
