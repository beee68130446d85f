"""What a run prints: seqrev's own lines, no product advertising or summary table by default, and every
command line piped into a reader that stops early (`| head`) ends quietly."""

import io
import logging
import subprocess
import sys

import pytest

from seqrev.console import quiet_lightning
from seqrev.run import train

from conftest import ROOT, TINY, compose_config, run_cli

ONE_EPOCH = (*TINY, "trainer.max_epochs=1")



@pytest.mark.slow  # Lightning advertises once per process: only a fresh one shows whether it is kept quiet
def test_a_run_prints_no_advertising_and_no_summary_table_unless_asked(tmp_path):
    plain = run_cli(*ONE_EPOCH, f"hydra.run.dir={tmp_path / 'plain'}")
    assert plain.returncode == 0, plain.stderr[-2000:]
    said = plain.stdout + plain.stderr
    assert "Tip:" not in said and "litlogger" not in said and "Total Flops" not in said
    assert "4,010 trainable parameters" in said and "PREDICTION ACCURACY (%):" in said  # seqrev's own lines stay
    assert "litlogger" not in (tmp_path / "plain" / "train.log").read_text()
    table = run_cli(*ONE_EPOCH, "trainer.enable_model_summary=true", f"hydra.run.dir={tmp_path / 'table'}")
    assert "Total params" in table.stdout + table.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("console") / "run"
    train(compose_config(*ONE_EPOCH, output_dir=run))
    return run


@pytest.mark.parametrize("command", [
    ["-m", "seqrev.report", "{run}"],
    pytest.param(["-m", "seqrev.predict", "{run}", "3,2,9,1", "1,2,3,4"], marks=pytest.mark.slow),
    pytest.param(["-m", "seqrev.train", *ONE_EPOCH, "hydra.run.dir={run}_again"], marks=pytest.mark.slow),
], ids=["report", "predict", "train"])
def test_piped_into_a_reader_that_stops_it_ends_quietly(finished_run, command):
    args = [arg.replace("{run}", str(finished_run)) for arg in command]
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    process.stdout.close()  # the reader is gone before the first line, as `| head -0` would be
    stderr = process.stderr.read()
    process.wait(timeout=300)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr


def test_lightning_lines_reach_the_runs_handlers_even_when_lightning_was_imported_before_them(caplog):
    logger = logging.getLogger("lightning.pytorch")
    own = logging.StreamHandler(io.StringIO())  # what `import lightning.pytorch` adds while logging has no handler
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:], logger.propagate = [own], False
    try:
        quiet_lightning()
        with caplog.at_level(logging.INFO):
            logger.info("GPU available: False, used: False")
        assert own.stream.getvalue() == ""  # not on stderr a second time
        assert "GPU available: False" in caplog.text  # but where the run's console and train.log are
    finally:
        logger.handlers[:], logger.propagate = saved
