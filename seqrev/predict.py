"""`python -m seqrev.predict RUN SEQUENCE [SEQUENCE ...]`: ask a trained model about your own sequences.

    python -m seqrev.predict outputs/runs/<run> 3,2,9,1 1,2,3,4
    python -m seqrev.predict outputs/runs/<run>/checkpoints/last.ckpt --file sequences.txt --json

RUN is a run folder (a sweep's job folder too; its best.ckpt unless --checkpoint last) or a .ckpt
file. Prints the tutorial's line per sequence, where Expected is the run's own task applied to the
input. No Hydra, no Trainer: it starts as fast as loading a model can.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from pathlib import Path

from seqrev.errors import EXPECTED_ERRORS, RunDirError

# Imports inside functions: torch and the models load once the command line has been read.


def parse_sequence(text: str) -> list[int]:
    """'3,2,9,1' (or '3 2 9 1') -> [3, 2, 9, 1]; ValueError in one sentence otherwise."""
    parts = [p for p in text.replace(",", " ").split()]
    if not parts:
        raise ValueError(f"{text!r} is an empty sequence: give symbols separated by commas, e.g. 3,2,9,1")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a sequence of whole numbers: give symbols separated by commas, "
                         "e.g. 3,2,9,1") from None


def read_sequences(args: argparse.Namespace) -> list[list[int]]:
    lines = list(args.sequences)
    if args.file is not None:
        try:
            handle = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115 - closed below
        except OSError as error:
            raise RunDirError(f"--file {args.file}: {error.strerror}.") from None
        with handle:
            lines += [line for line in handle.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError("no sequence given: pass some (e.g. 3,2,9,1) or --file FILE")
    return [parse_sequence(line) for line in lines]


def expected_outputs(task: str, sequences: list[list[int]], timesteps: int, pad: int) -> list[list[int]]:
    """The task applied to each input (reverse, sort, ...), as seqrev's data generator computes it."""
    import torch

    from seqrev.tasks import TASKS, targets_for, until_end

    if task not in TASKS:
        raise RunDirError(f"this run's task {task!r} is not registered here: name the module that defines it with "
                          "--import MODULE.")
    padded = [s + [pad] * (timesteps - len(s)) for s in sequences]
    targets = targets_for(task, torch.tensor(padded), torch.tensor([len(s) for s in sequences]), pad)
    return [until_end(row, pad) for row in targets.tolist()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqrev.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder, a sweep's job folder, or a .ckpt file")
    parser.add_argument("sequences", nargs="*", help="comma-separated symbols, e.g. 3,2,9,1")
    parser.add_argument("--file", help="one comma-separated sequence per line; - for standard input")
    parser.add_argument("--checkpoint", default="best", help="best (default) or last, for a run folder")
    parser.add_argument("--json", action="store_true", help="a JSON list instead of the tutorial's lines")
    parser.add_argument("--attention", type=Path, metavar="PNG", help="save attention weights (attention runs)")
    parser.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                        help="a module of yours to import first: the one defining the run's wiring or task")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into `head`: stop quietly, as Unix tools do
    try:
        return predict(args)
    except (*EXPECTED_ERRORS, ValueError) as error:
        print(f"seqrev: {error}", file=sys.stderr)
        return 2


def predict(args: argparse.Namespace) -> int:
    from seqrev.inference import read

    sequences = read_sequences(args)
    for module in args.modules:  # the user's say-so, never the checkpoint's
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise RunDirError(f"--import {module}: {error}.") from None
    model, data = read(args.run, args.checkpoint)
    if args.attention is not None and not hasattr(model, "attention_weights"):
        raise ValueError(f"--attention needs a model with attention; this run's model is {model.name!r}")
    predicted = model.predict_symbols(sequences)
    task = data.get("task", "reverse")
    expected = expected_outputs(task, sequences, model.timesteps, model.n_features)
    if args.json:
        print(json.dumps([{"input": x, "predicted": p, "expected": y, "right": p == y}
                          for x, p, y in zip(sequences, predicted, expected)]))
    else:
        for x, p, y in zip(sequences, predicted, expected):
            print(f"Input {x} Expected: {y} Predicted {p} {p == y}")
    if args.attention is not None:
        save_attention(model, sequences, args.attention)
    return 0


def save_attention(model, sequences: list[list[int]], path: Path) -> None:
    """Decoder step x input step heatmaps of these sequences, as a PNG."""
    from seqrev.plotting import MISSING, attention_figure, pyplot

    plt = pyplot()
    if plt is None:
        raise ValueError(f"--attention needs matplotlib: {MISSING}")
    weights = model.attention_weights(model.encode(sequences)).cpu().numpy()
    fig = attention_figure(plt, weights, sequences)
    try:
        fig.savefig(path, dpi=100)
    except OSError as error:
        raise RunDirError(f"--attention {path}: could not write it ({error.strerror}).") from None
    finally:
        plt.close(fig)
    print(f"attention weights: {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
