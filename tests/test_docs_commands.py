"""Every shell command in README.md and docs/*.md runs: a command that stops working fails CI.

Each page's ```bash blocks run in order, as one script, in a scratch folder holding a copy of docs/
(so `cd docs/own_experiment` works and nothing lands in the clone), in a quick mode: every
`python -m seqrev.train` gets a short epoch budget and small data (a sweep keeps its grid but runs its
first seed only; a settle sweep one round of two seeds; an Optuna search two trials), `seqrev.bench`
gets `--quick`, and `tensorboard --logdir X` reads the events once
(`--inspect`) instead of serving them. Setting up an environment (`python3 -m venv`,
`. .venv/bin/activate`, `pip install`) and running the tests themselves are left to CI, which does both.
Templates with placeholders (`<run>`, PART) sit in ```text blocks.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
QUICK_TRAIN = "trainer.max_epochs=1 data.n_train=200 data.n_test=40 data.eval_batch_size=64"
LEFT_TO_CI = ("python3 -m venv", ". .venv/bin/activate", "pip install", "python -m pytest")


def shell_commands(page: Path) -> list[str]:
    """The page's commands, in order: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def quick(command: str) -> str | None:
    """The command as the test runs it; None when CI does that part itself."""
    parts = [p.strip() for p in command.split("&&") if not p.strip().startswith(LEFT_TO_CI)]
    quick_parts = []
    for part in parts:
        if "python -m seqrev.train" in part:
            part = f"{part} {QUICK_TRAIN}"
            if "hydra/sweeper=settle" in part:  # one round of two seeds: the least a comparison needs
                part += " hydra.sweeper.initial_seeds=2 hydra.sweeper.max_seeds=2" + (" seed=0,1"
                                                         if "experiment=tutorial_table" in part else "")
            elif " -m " in f"{part} ":  # a sweep keeps its grid but runs its first seed only
                part = re.sub(r"(?<=\sseed=)(\w+)(,\w+)+", r"\1", part)
                if "experiment=tutorial_table" in part:
                    part += " hydra.sweeper.params.seed=0"
                if "hparams_search=optuna" in part:  # a search of two trials: the study is made, stored, continued
                    part += " hydra.sweeper.n_trials=2"
        elif "python -m seqrev.bench" in part:
            part = f"{part} --quick"
        elif part.startswith("tensorboard "):
            part = f"{part} --inspect"
        elif part.startswith("mlflow ui --backend-store-uri "):  # a server: ask the same database instead
            part = f"MLFLOW_TRACKING_URI={part.split()[-1]} mlflow experiments search"
        quick_parts.append(part)
    return " && ".join(quick_parts) or None


def test_every_page_has_commands_and_none_is_a_template():
    assert shell_commands(ROOT / "README.md")
    for page in PAGES:
        for command in shell_commands(page):
            assert "<" not in command.split("#")[0] and "PART" not in command, (page.name, command)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if any(map(quick, shell_commands(p)))], ids=lambda p: p.name)
def test_the_commands_of_a_page_run(tmp_path, page):
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.ipynb", "outputs", "sweep"))
    script = "\n".join(c for c in map(quick, shell_commands(page)) if c)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, f"{page.name}:\n{script}\n--- stderr ---\n{done.stderr[-4000:]}"
