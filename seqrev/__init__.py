"""seqrev: sequence-to-sequence experiments with recurrent networks (Lightning + Hydra)."""

__version__ = "0.1.0"
