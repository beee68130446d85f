"""A metric of your own: anything a callback logs under `extra/` lands in results.json, HPARAMS and the CSV."""

from lightning.pytorch import Callback


class LargestWeight(Callback):
    """The largest absolute weight of the output layer, after every epoch."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("extra/largest_output_weight", pl_module.output_layer.weight.abs().max())
