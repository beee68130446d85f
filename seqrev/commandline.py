"""A `python -m seqrev.train` command line as seqrev reads it before Hydra parses it: its flags and its
overrides (`key=value` words), and how to write a value back into one."""

from __future__ import annotations

SWEEP_FLAGS = frozenset({"-m", "--multirun"})


def is_sweep(words: list[str]) -> bool:
    """Whether a command line (or its words after the program's name) asks for a sweep."""
    return bool(SWEEP_FLAGS & set(words))


def overrides_on(argv: list[str]) -> list[str]:
    """A command line's overrides: every word after the program's name but the flags."""
    return [word for word in argv[1:] if not word.startswith("-")]


def given(words: list[str], key: str) -> list[str]:
    """The values `key=` is given among `words`, in order, quotes taken off (the last one counts)."""
    return [override_value(word) for word in words if word.startswith(f"{key}=")]


def override_value(word: str) -> str:
    """The value of a `key=value` override as the user meant it, quotes taken off."""
    return word.split("=", 1)[1].strip("'\"")


def quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (run names contain ',' and '=')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
