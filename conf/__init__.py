"""seqrev's Hydra configs. The folder is installed as the package `seqrev.conf` (pyproject.toml), so a
wheel carries them and Hydra finds them as `pkg://seqrev.conf` wherever seqrev is installed."""
