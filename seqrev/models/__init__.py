"""Models: a LightningModule base and one short class per wiring of recurrent layers."""

from seqrev.models.base import Seq2SeqModel
from seqrev.models.wirings import WIRINGS

__all__ = ["Seq2SeqModel", "WIRINGS"]
