"""Models: a LightningModule base and one short class per wiring of recurrent layers."""

from seqrev.models.base import Seq2SeqModel
from seqrev.models.decoders import Attention, EncoderDecoder
from seqrev.models.wirings import TUTORIAL_WIRINGS

WIRINGS: dict[str, type[Seq2SeqModel]] = {cls.name: cls for cls in (*TUTORIAL_WIRINGS, EncoderDecoder, Attention)}
"""seqrev's own wirings by name (the names of their files in conf/model, see seqrev.catalog)."""

__all__ = ["Seq2SeqModel", "WIRINGS"]
