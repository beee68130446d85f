"""seqrev: sequence-to-sequence experiments with recurrent networks (Lightning + Hydra).

From Python (a notebook, say)::

    import seqrev
    results = seqrev.fit("model=both_outputs", "data.timesteps=8")   # as python -m seqrev.train would
    model = seqrev.load(results["run_dir"])
    model.predict_symbols([[3, 2, 9, 1, 4, 4, 0, 7]])
"""

__version__ = "0.1.0"
__all__ = ["fit", "load"]


def __getattr__(name: str):
    # Imported on first use, so `import seqrev` (and the report, which lives in it) stays free of torch.
    if name == "fit":
        from seqrev.api import fit
        return fit
    if name == "load":
        from seqrev.inference import load
        return load
    if name == "errors":
        import seqrev.errors
        return seqrev.errors
    raise AttributeError(f"module 'seqrev' has no attribute {name!r}")
