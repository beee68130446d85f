"""`python -m seqrev.bench`: seqrev's training path against a plain PyTorch loop, measured interleaved.

Per step, in one process: seqrev as `seqrev.train` builds it (grouped), the same with a per-batch callback
(Lightning's own loop), a LightningModule as a user would write it without seqrev, and a plain loop, the
floor every ratio is taken against; then whole processes (docs/performance.md says what each path does).
`--packed`: packs of seeds instead (seqrev.bench.packed). Machines are noisy: compare the ratios, which
are measured in the same run, not absolute times.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seqrev.catalog import compose
from seqrev.config import device

# Imports inside functions: torch and Lightning load in the measurements, so `--help` and a refused option answer at
# once.


def seqrev_fit(cfg) -> tuple[float, int]:
    """Seconds and optimiser steps of training built exactly as seqrev.train builds it.

    Timed from Lightning's `on_train_start` to `on_train_end`: every epoch's steps, validation,
    checkpoints, logging and progress bar, but not the one-off set-up, which the whole-process
    measurement covers.
    """
    from seqrev.bench.timers import TrainingTimer
    from seqrev.run import build

    datamodule, model, trainer = build(cfg)
    timer = TrainingTimer()
    trainer.callbacks.append(timer)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # bar drawn, not shown
        trainer.fit(model, datamodule=datamodule)
    return timer.seconds, trainer.global_step


def plain_fit(cfg) -> tuple[float, int]:
    """The floor: the same model class, batches and optimiser in a plain loop, validation each epoch,
    on the same device as seqrev's."""
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch import seed_everything

    from seqrev.data import Batches

    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(False)  # PyTorch's default, whatever a Trainer set before
    seed_everything(cfg.seed, verbose=False)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
    clip = cfg.trainer.get("gradient_clip_val")
    datamodule.prepare()
    on = device(cfg.trainer.accelerator)  # where seqrev's Trainer trains: the plain loop uses the same device
    model.to(on)
    optimizer, scheduler = model.configure_optimizers(), None
    if isinstance(optimizer, dict):  # with a learning-rate schedule: stepped once an epoch, as seqrev does
        optimizer, scheduler = optimizer["optimizer"], optimizer["lr_scheduler"]["scheduler"]
    train_split = tuple(t.to(on) for t in datamodule.train)
    batches = Batches(*train_split, datamodule.batch_size, shuffle=True, generator=datamodule.shuffle_generator)
    val_inputs, val_targets = (t.to(on) for t in datamodule.val)
    steps = 0
    started = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        model.train()
        for inputs, targets in batches:
            loss = model.loss(model.training_forward(inputs, targets), targets)  # teacher forcing for decoders
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:  # what trainer.gradient_clip_val does in Lightning's step
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
            optimizer.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            logits = model(val_inputs)
            val_loss = model.loss(logits, val_targets).item()  # .item() waits for the device, as seqrev's epoch does
            (logits.argmax(-1) == val_targets).float().mean().item()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None:
            scheduler.step()
    seconds = time.perf_counter() - started
    assert val_loss == val_loss, "validation loss is NaN"
    return seconds, steps


def reference_fit(cfg, scratch: Path) -> tuple[float, int]:
    """What a user would write without seqrev: the same model class and pairs in a LightningModule with
    automatic optimisation, DataLoaders over TensorDatasets, Lightning's default Trainer (TensorBoard
    logger, checkpoints) without progress bar, on the same device. Timed as `seqrev_fit` is."""
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch import LightningModule, Trainer, seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from seqrev.bench.timers import TrainingTimer

    class Reference(LightningModule):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            logits = self.net.training_forward(inputs, targets)  # teacher forcing for decoders
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

        def validation_step(self, batch, batch_idx):
            inputs, targets = batch
            logits = self.net(inputs)
            self.log("val/loss", torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
            self.log("val/acc", (logits.argmax(-1) == targets).float().mean())

        def configure_optimizers(self):
            return self.net.configure_optimizers()

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, verbose=False)
    datamodule, net = instantiate(cfg.data), instantiate(cfg.model)
    datamodule.prepare()
    train = DataLoader(TensorDataset(*datamodule.train), batch_size=datamodule.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(*datamodule.val), batch_size=datamodule.batch_size)
    timer = TrainingTimer()
    trainer = Trainer(max_epochs=cfg.trainer.max_epochs, accelerator=device(cfg.trainer.accelerator), devices=1,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
                      logger=TensorBoardLogger(scratch), default_root_dir=scratch, callbacks=[timer])
    trainer.fit(Reference(net), train, val)
    return timer.seconds, trainer.global_step


PATHS = ("grouped", "sync_checkpoints", "per_batch", "reference", "plain")
PER_BATCH_CALLBACK = ("+callbacks.clock._target_=lightning.pytorch.callbacks.Timer",
                      "+callbacks.clock.duration=99:00:00:00")  # checks the clock after every batch
SYNC_CHECKPOINTS = ("trainer.plugins=[{_target_:seqrev.checkpointing.AtomicCheckpointIO,background:false}]",)
"""The default with each checkpoint written before training goes on, rather than in the background."""


def interleaved(paths: list[str], repeats: int, measure) -> dict[str, list[float]]:
    """`measure(path, repeat)` of every path in `repeats` rounds, each path first in turn so machine noise
    hits all of them; a round before them warms every path up and is not counted."""
    measured: dict[str, list[float]] = {path: [] for path in paths}
    for repeat in range(-1, repeats):
        for path in paths[repeat % len(paths):] + paths[:repeat % len(paths)]:
            value = measure(path, repeat)
            if repeat >= 0:
                measured[path].append(value)
    return measured


def per_step(wirings: list[str], timesteps: list[int], epochs: int, repeats: int, quick: bool,
             extra_overrides: list[str] = ()) -> list[dict]:
    """Per-step time of each of PATHS, and each one's ratio against the plain loop of the same repeat."""
    rows = []
    extra = (["data.n_train=320"] if quick else []) + list(extra_overrides)
    with tempfile.TemporaryDirectory() as scratch:
        for wiring in wirings:
            for t in timesteps:
                def measure(path: str, repeat: int, wiring: str = wiring, t: int = t) -> float:
                    cfg = compose([f"model={wiring}", f"data.timesteps={t}", f"trainer.max_epochs={epochs}",
                                   f"paths.output_dir={Path(scratch) / f'{wiring}-{t}-{repeat}-{path}'}", *extra,
                                   *(PER_BATCH_CALLBACK if path == "per_batch" else ()),
                                   *(SYNC_CHECKPOINTS if path == "sync_checkpoints" else ())])
                    if path == "reference":
                        seconds, steps = reference_fit(cfg, Path(scratch) / "reference")
                    else:
                        seconds, steps = (plain_fit if path == "plain" else seqrev_fit)(cfg)
                    return 1000 * seconds / steps

                ms = interleaved(list(PATHS), repeats, measure)
                row = {"wiring": wiring, "timesteps": t, "repeats": repeats, "epochs": epochs}
                for path in PATHS:
                    row[f"{path}_ms_per_step"] = statistics.median(ms[path])
                    row[f"{path}_ratio"] = statistics.median(a / b for a, b in zip(ms[path], ms["plain"]))
                rows.append(row)
                print(f"  {wiring:17s} T={t:<3d} " + "  ".join(
                    f"{path} {row[f'{path}_ms_per_step']:.3f} ms ({row[f'{path}_ratio']:.2f}x)" for path in PATHS),
                    flush=True)
    return rows


# -- whole processes ---------------------------------------------------------------------------------

PLAIN_SCRIPT = r'''
import sys, time
started = time.time()
import torch
from torch import nn
torch.set_num_threads(1)
from seqrev.layers import dense_layer, recurrent_layer
epochs, first_step_file = int(sys.argv[1]), sys.argv[2]
device = "cuda" if torch.cuda.is_available() else "cpu"  # where seqrev's default trainer (accelerator auto) trains
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
def pairs(n):
    s = torch.randint(0, 10, (n, 4), generator=gen)
    return nn.functional.one_hot(s, 10).float().to(device), s.flip(1).to(device)
(x, y), (x_test, y_test) = pairs(2000), pairs(200)
x_train, y_train, x_val, y_val = x[:1800], y[:1800], x[1800:], y[1800:]
class BothOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1, self.layer2, self.out = recurrent_layer(10, 16), recurrent_layer(16, 16), dense_layer(16, 10)
    def forward(self, x):
        all_h, final = self.layer1(x)
        return self.out(self.layer2(all_h, final)[0])
from torch.utils.tensorboard import SummaryWriter  # the same work as seqrev: events, checkpoints
writer = SummaryWriter(first_step_file + "_events")
model = BothOutputs().to(device)
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, eps=1e-7)
loss_fn = nn.CrossEntropyLoss()
first = True
for epoch in range(epochs):
    model.train()
    order = torch.randperm(1800, generator=gen).to(device)
    for xb, yb in zip(x_train[order].split(32), y_train[order].split(32)):
        if first:
            open(first_step_file, "w").write(repr(time.time())); first = False
        loss = loss_fn(model(xb).flatten(0, 1), yb.flatten())
        opt.zero_grad(); loss.backward(); opt.step()
    model.eval()
    with torch.no_grad():
        val_loss = loss_fn(model(x_val).flatten(0, 1), y_val.flatten()).item()
    writer.add_scalar("val/loss", val_loss, epoch)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, first_step_file + ".ckpt")
with torch.no_grad():
    acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
writer.add_scalar("test/acc", acc, epochs)
writer.close()
print(f"test accuracy {acc:.4f}")
'''


def run_process(command: list[str], first_step_file: Path) -> dict:
    """Wall time, peak resident memory and time to the first training step of one whole process."""
    first_step_file.unlink(missing_ok=True)
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - started
    stderr = process.stderr.read().decode()
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
            "first_step_s": float(first_step_file.read_text()) - started}


def end_to_end(epochs: int, repeats: int) -> dict:
    results: dict[str, list[dict]] = {"seqrev": [], "plain": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            marker = Path(scratch) / "first_step"
            run_dir = Path(scratch) / f"run{repeat}"
            results["seqrev"].append(run_process(
                [sys.executable, "-m", "seqrev.train", "model=both_outputs", "data.timesteps=4",
                 f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}",
                 "+callbacks.first_step_timer._target_=seqrev.bench.timers.FirstStepTimer",
                 f"+callbacks.first_step_timer.path={marker}"], marker))
            results["plain"].append(run_process([sys.executable, "-c", PLAIN_SCRIPT, str(epochs), str(marker)], marker))
    summary = {"epochs": epochs, "repeats": repeats}
    for key in ("wall_s", "peak_rss_mb", "first_step_s"):
        for side in ("seqrev", "plain"):
            summary[f"{side}_{key}"] = statistics.median(r[key] for r in results[side])
    summary["wall_ratio"] = statistics.median(a["wall_s"] / b["wall_s"] for a, b in zip(results["seqrev"],
                                                                                      results["plain"]))
    return summary
