"""Use what you trained: checkpoints that rebuild their model, seqrev.predict, seqrev.fit / load, safe loading."""

import json
import subprocess

import pytest
import torch

import seqrev
from seqrev.models import WIRINGS

from conftest import TINY, run_cli

TWO_EPOCHS = (*TINY, "trainer.max_epochs=2")



@pytest.fixture
def predict_cli(capsys):
    """`python -m seqrev.predict ARGS` in this process: what it printed and its exit status."""
    import signal

    from seqrev.predict import main

    def run(*args: str) -> subprocess.CompletedProcess:
        sigpipe = signal.getsignal(signal.SIGPIPE)  # main() makes a broken pipe end it quietly: not pytest
        capsys.readouterr()
        try:
            status = main(list(args))
        except SystemExit as exit:  # argparse's own refusals
            status = exit.code
        finally:
            signal.signal(signal.SIGPIPE, sigpipe)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["seqrev.predict", *args], status, out, err)

    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One short both_outputs run at T=4, made the way a user makes it (seqrev.fit is the command line's run)."""
    path = tmp_path_factory.mktemp("runs") / "run"
    seqrev.fit("model=both_outputs", *TWO_EPOCHS, f"hydra.run.dir={path}")
    return path


def test_the_cli_answers_in_the_tutorials_words_and_in_json(run_dir, predict_cli):
    done = predict_cli(str(run_dir), "3,2,9,1", "1,2,3,4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Input [3, 2, 9, 1] Expected: [1, 9, 2, 3] Predicted [")
    answers = json.loads(predict_cli(str(run_dir), "3,2,9,1", "--json").stdout)
    model = seqrev.load(run_dir)
    assert answers == [{"input": [3, 2, 9, 1], "predicted": model.predict_symbols([[3, 2, 9, 1]])[0],
                        "expected": [1, 9, 2, 3],
                        "right": model.predict_symbols([[3, 2, 9, 1]])[0] == [1, 9, 2, 3]}]


def test_load_from_checkpoint_seqrev_load_and_the_cli_agree_with_the_trained_model(run_dir, predict_cli):
    sequences = [[3, 2, 9, 1], [0, 0, 5, 7], [9, 8, 7, 6]]
    model = seqrev.load(run_dir)
    assert isinstance(model, WIRINGS["both_outputs"]) and not model.training and model.device.type == "cpu"
    lightning_way = WIRINGS["both_outputs"].load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert lightning_way.predict_symbols(sequences) == model.predict_symbols(sequences)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in state.items())
    cli = json.loads(predict_cli(str(run_dir), *(",".join(map(str, s)) for s in sequences), "--json").stdout)
    assert [row["predicted"] for row in cli] == model.predict_symbols(sequences)
    last = seqrev.load(run_dir / "checkpoints" / "last.ckpt")
    assert last.predict_symbols(sequences) == seqrev.load(run_dir, checkpoint="last").predict_symbols(sequences)


def test_checkpoints_carry_plain_hyperparameters(run_dir):
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["seqrev_wiring"] == "both_outputs"
    assert checkpoint["hyper_parameters"] == {
        "n_features": 10, "timesteps": 4, "units": 16, "init": "keras", "cell": "lstm", "padded": False,
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001, "eps": 1e-07}, "scheduler": None}
    assert checkpoint["SequenceData"]["task"] == "reverse"


def test_a_padded_task_predicts_shorter_sequences_and_stops_at_the_end_symbol(tmp_path, predict_cli):
    results = seqrev.fit("model=attention", "data.task=select_even", "data.timesteps=6", "data.min_timesteps=3",
                         *TWO_EPOCHS, f"hydra.run.dir={tmp_path / 'run'}")
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file() and (tmp_path / "run" / "train.log").is_file()
    done = predict_cli(results["run_dir"], "2,3,4", "1,3,5,7,9,2", "--json", "--attention", str(tmp_path / "a.png"))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["expected"] for row in rows] == [[2, 4], [2]]  # the run's own task, not reversal
    model = seqrev.load(results["run_dir"])
    raw = model.predict(model.encode([[2, 3, 4], [1, 3, 5, 7, 9, 2]])).tolist()  # six positions each
    assert [row["predicted"] for row in rows] == [r[: r.index(10)] if 10 in r else r for r in raw]  # cut at the end
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_fit_makes_one_run_and_says_so_when_given_a_sweep():
    with pytest.raises(seqrev.errors.ConfigError, match="seqrev.fit makes one run; for a sweep, use the command"):
        seqrev.fit("-m", "seed=0,1")


@pytest.mark.slow
def test_fit_writes_the_same_run_folder_as_the_command_line_and_resume_works_on_it(tmp_path):
    results = seqrev.fit("model=return_state", *TWO_EPOCHS, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    cli = run_cli("model=return_state", *TWO_EPOCHS, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'cli'}")
    assert cli.returncode == 0, cli.stderr[-2000:]
    from_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    for key in ("model", "test_acc", "val_loss", "train_acc", "trainable_params", "epochs_run"):
        assert results[key] == from_cli[key], key
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == results
    with pytest.raises(seqrev.errors.RunDirError, match="already holds a run's results.json"):
        seqrev.fit("model=return_state", f"hydra.run.dir={tmp_path / 'run'}")
    with pytest.raises(seqrev.errors.ConfigError, match="did you mean `model.units`"):
        seqrev.fit("model.unit=3")


@pytest.mark.slow
def test_fit_resume_is_the_command_lines_resume(tmp_path):
    """One way in: `seqrev.fit("resume=RUN")` continues RUN in place, refuses what the command line refuses
    with the same sentence, and ends with the same numbers."""
    import shutil

    killed = tmp_path / "killed"
    seqrev.fit("model=return_state", *TWO_EPOCHS, f"hydra.run.dir={killed}")
    (killed / "results.json").unlink()  # as a run killed after its second epoch leaves its folder
    by_cli, by_fit = tmp_path / "cli", tmp_path / "fit"
    shutil.copytree(killed, by_cli)
    shutil.copytree(killed, by_fit)
    cli = run_cli(f"resume={by_cli}", "trainer.max_epochs=4")
    assert cli.returncode == 0, cli.stderr[-2000:]
    from_cli = json.loads((by_cli / "results.json").read_text())
    results = seqrev.fit(f"resume={by_fit}", "trainer.max_epochs=4")
    assert results["run_dir"] == str(by_fit) and results["resumed"] and results["epochs_run"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli", "fit", "killed"]  # no new folder
    for key in ("test_acc", "test_seq_acc", "test_loss", "val_loss", "train_acc", "epochs_run"):
        assert results[key] == from_cli[key], key

    finished = run_cli(f"resume={by_cli}")
    with pytest.raises(seqrev.errors.RunDirError) as refused:
        seqrev.fit(f"resume={by_cli}")
    assert finished.returncode == 2 and finished.stderr.strip() == f"seqrev: {refused.value}"
    overrides = killed / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- +callbacks.x._target_=os.system\n")
    crafted = run_cli(f"resume={killed}")
    with pytest.raises(seqrev.errors.RunDirError) as refused:
        seqrev.fit(f"resume={killed}")
    assert crafted.returncode == 2 and crafted.stderr.strip() == f"seqrev: {refused.value}"
    assert "would have code instantiated" in str(refused.value)


BAD = [
    (["3,2,9,11"], "symbol 11 in [3, 2, 9, 11] is not allowed: this model knows the symbols 0..9"),
    (["3,2,9"], "has 3 symbols: this model was trained on sequences of exactly 4 (timesteps=4)"),
    (["3,x,9,1"], "is not a sequence of whole numbers"),
    ([","], "is an empty sequence"),
    (["3,2,9,1", "--attention", "a.png"], "--attention needs a model with attention"),
    (["3,2,9,1", "--checkpoint", "middle"], "--checkpoint 'middle' is not allowed"),
]


@pytest.mark.parametrize("args,sentence", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_to_predict_is_one_sentence(run_dir, args, sentence, predict_cli):
    done = predict_cli(str(run_dir), *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and sentence in done.stderr, done.stderr


def test_paths_that_hold_no_model_are_one_sentence(tmp_path, run_dir, predict_cli):
    cases = {"no such": tmp_path / "nothing", "not a seqrev run folder": tmp_path}
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint")
    cases["is not a readable checkpoint"] = tmp_path / "corrupt.ckpt"
    empty_run = tmp_path / "empty"
    (empty_run / ".hydra").mkdir(parents=True)
    cases["has no best.ckpt"] = empty_run
    old = tmp_path / "old.ckpt"
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    del checkpoint["hyper_parameters"], checkpoint["seqrev_wiring"]  # as written before checkpoints carried them
    torch.save(checkpoint, old)
    cases["written by an older seqrev"] = old
    for sentence, path in cases.items():
        done = predict_cli(str(path), "3,2,9,1")
        assert done.returncode == 2 and sentence in done.stderr and done.stderr.count("\n") == 1, done.stderr


class Payload:
    """Unpickling this runs a command: what a crafted checkpoint from elsewhere could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path, run_dir, predict_cli, seqrev_train):
    marker = tmp_path / "code-ran"
    crafted_run = tmp_path / "shared-run"
    seqrev.fit(*TWO_EPOCHS, "trainer.max_epochs=1", f"hydra.run.dir={crafted_run}")
    (crafted_run / "results.json").unlink()  # looks like a run that died: resume= would take it
    checkpoint = torch.load(crafted_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["payload"] = Payload(marker)
    for name in ("last.ckpt", "best.ckpt"):
        torch.save(checkpoint, crafted_run / "checkpoints" / name)

    predicted = predict_cli(str(crafted_run), "3,2,9,1")
    assert predicted.returncode == 2 and "reading those could run code" in predicted.stderr
    with pytest.raises(seqrev.errors.RunDirError, match="could run code"):
        seqrev.load(crafted_run)
    resumed = seqrev_train(f"resume={crafted_run}")
    assert resumed.returncode == 2 and "could run code" in resumed.stderr and "Traceback" not in resumed.stderr
    assert not marker.exists()
    torch.load(crafted_run / "checkpoints" / "last.ckpt", weights_only=False)  # the file really would run it
    assert marker.exists()
