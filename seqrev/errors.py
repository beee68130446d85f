"""Errors that are the user's input or the run's numbers, not a bug: reported as one sentence."""


class ConfigError(ValueError):
    """A config value is out of range or of the wrong type."""


class RunDirError(ValueError):
    """A path given as a run directory is not one, or cannot be resumed."""


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss is NaN or infinite."""


EXPECTED_ERRORS = (ConfigError, RunDirError, NonFiniteLossError)
