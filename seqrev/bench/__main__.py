"""`python -m seqrev.bench`: the benchmark's command line (seqrev.bench, and seqrev.bench.packed with --packed)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from seqrev.bench import PATHS, end_to_end, per_step
from seqrev.catalog import TUTORIAL_WIRINGS, wiring_names

# Imports inside functions: each benchmark's modules load only when it is the one asked for.


def main(argv: list[str] | None = None) -> int:
    import seqrev.bench

    parser = argparse.ArgumentParser(prog="python -m seqrev.bench", description=seqrev.bench.__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (for CI)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--wirings", nargs="+", default=list(TUTORIAL_WIRINGS), choices=wiring_names(),
                        help="default: the tutorial's five")
    parser.add_argument("--timesteps", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per measured fit (per-step part)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    parser.add_argument("--e2e-epochs", type=int, default=20, help="epochs of the whole-process runs")
    parser.add_argument("--clip", type=float, help="gradient clipping (norm) in both loops, per-step part")
    parser.add_argument("--scheduler", choices=["none", "plateau", "cosine"], default="none",
                        help="seqrev's learning-rate schedule, per-step part (the plain loop has none)")
    parser.add_argument("--packed", action="store_true", help="packs of seeds against ordinary jobs instead "
                        "(both_outputs, or the one wiring given with --wirings; each of --timesteps)")
    parser.add_argument("--pack-sizes", nargs="+", type=int, default=[1, 3, 10, 30], help="members per pack (--packed)")
    parser.add_argument("--sweeps", action="store_true",
                        help="with --packed: also whole sweeps, packed against joblib (several minutes each)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)  # keep the table readable
    if args.quick:
        args.epochs, args.repeats, args.e2e_epochs = 1, 1, 1
    if args.packed:
        return packed_main(args)

    # Whole processes first, while this process is still small: a child's peak memory counts the
    # pages it shares with its parent between fork and exec.
    print(f"whole processes, both_outputs T=4, {args.e2e_epochs} epochs, median of {args.repeats}:", flush=True)
    whole = end_to_end(args.e2e_epochs, args.repeats)
    print(f"per training step, interleaved, median of {args.repeats} ({args.epochs} epochs each):", flush=True)
    extra = ([f"trainer.gradient_clip_val={args.clip}"] if args.clip else []) + [f"scheduler={args.scheduler}"]
    steps = per_step(args.wirings, args.timesteps, args.epochs, args.repeats, args.quick, extra)
    print(f"  wall: seqrev {whole['seqrev_wall_s']:.2f} s, plain {whole['plain_wall_s']:.2f} s, "
          f"ratio {whole['wall_ratio']:.3f}")
    print(f"  start to first training step: seqrev {whole['seqrev_first_step_s']:.2f} s, "
          f"plain {whole['plain_first_step_s']:.2f} s")
    print(f"  peak resident memory: seqrev {whole['seqrev_peak_rss_mb']:.0f} MB, "
          f"plain {whole['plain_peak_rss_mb']:.0f} MB")
    print("\nms per training step (ratio against the plain loop of the same repeat):", end="")
    markdown_table(["wiring", "T", "seqrev, grouped (default)", "the same, checkpoints written in the training thread",
                    "seqrev, a per-batch callback", "reference LightningModule", "plain loop"],
                   [[r["wiring"], r["timesteps"], *(f"{r[f'{path}_ms_per_step']:.3f} ({r[f'{path}_ratio']:.2f}x)"
                                                    for path in PATHS)] for r in steps])
    if args.json:
        args.json.write_text(json.dumps({"per_step": steps, "end_to_end": whole}, indent=2))
    return 0


def packed_main(args: argparse.Namespace) -> int:
    from seqrev.bench.packed import per_model_step, whole_sweeps

    logging.getLogger("seqrev").setLevel(logging.WARNING)  # the packs' own progress lines
    wiring = args.wirings[0] if args.wirings != list(TUTORIAL_WIRINGS) else "both_outputs"
    rows = []
    for t in args.timesteps:
        print(f"per model-step, {wiring} T={t}, interleaved, median of {args.repeats} ({args.epochs} epochs each):",
              flush=True)
        rows += per_model_step(wiring, t, args.pack_sizes, args.epochs, args.repeats)
    sweeps = []
    if args.sweeps:
        print("whole sweeps, back to back (python -m seqrev.train -m ...):", flush=True)
        sweeps = whole_sweeps(args.quick)
    markdown_table(["wiring", "T", "what", "layout", "ms per model-step", "speed against one job",
                    "against the plain loop"],
                   [[r["wiring"], r["timesteps"], r["path"], r["layout"], f"{r['ms_per_model_step']:.3f}",
                     f"{r['speed_vs_job']:.2f}x", f"{r['speed_vs_plain']:.2f}x"] for r in rows])
    if sweeps:
        markdown_table(["sweep", "packed", "joblib", "faster", "peak memory packed", "peak memory joblib"],
                       [[r["sweep"], f"{r['packed_wall_s']:.0f} s", f"{r['joblib_wall_s']:.0f} s",
                         f"{r['speed_up']:.2f}x", f"{r['packed_peak_memory_mb']:.0f} MB",
                         f"{r['joblib_peak_memory_mb']:.0f} MB"] for r in sweeps])
    if args.json:
        args.json.write_text(json.dumps({"packed_per_model_step": rows, "sweeps": sweeps}, indent=2))
    return 0


def markdown_table(headers: list[str], rows: list[list]) -> None:
    print("\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    sys.exit(main())
