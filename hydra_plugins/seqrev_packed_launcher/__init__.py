"""seqrev's Hydra launcher plugin: hydra/launcher=packed."""
