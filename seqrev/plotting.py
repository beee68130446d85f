"""Pictures: matplotlib when it is installed (the `plot` extra), drawn off-screen; and the attention heatmap.

Imports neither torch nor Lightning, so the report that uses it still starts instantly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Imports inside functions: matplotlib (the `plot` extra) loads only when a picture is drawn.

MISSING = "matplotlib is not installed (pip install -e '.[plot]')"


def pyplot() -> Any | None:
    """matplotlib.pyplot drawing to files (the Agg backend); None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def attention_figure(plt: Any, weights: Sequence, inputs: Sequence[Sequence[int]],
                     outputs: Sequence[Sequence[int]] | None = None, title: str | None = None) -> Any:
    """One heatmap per sequence of attention `weights` (output step x input step, each a 2-D array), the
    input symbols (and, when given, the output symbols) on the axes of sequences short enough to read."""
    fig, axes = plt.subplots(1, len(weights), figsize=(3.2 * len(weights), 3.4), squeeze=False)
    for i, (ax, w, x) in enumerate(zip(axes[0], weights, inputs)):
        ax.imshow(w[:, : len(x)], cmap="viridis", vmin=0, vmax=1)
        ax.set_xlabel("input step")
        ax.set_ylabel("output step")
        if len(x) <= 16:
            ax.set_xticks(range(len(x)), [str(v) for v in x], fontsize=6)
            if outputs is not None:
                ax.set_yticks(range(len(outputs[i])), [str(v) for v in outputs[i]], fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
