"""report.html (seqrev.report_page) and the sweep's progress line (seqrev.progress): what the page holds,
read as text in milliseconds; then the page in a real headless Chromium, for the tutorial's 60-job table."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from test_report import run_result

from seqrev.progress import Tally, progress_line, read_folders, sweep_size
from seqrev.report import write_report

from conftest import ROOT


def history(job: Path, losses: list[float], stopped_early: bool = False) -> None:
    results = json.loads((job / "results.json").read_text())
    results.update(history=[{"epoch": e, "val/loss": v, "val/acc": 1 - v} for e, v in enumerate(losses)],
                   stopped_early=stopped_early, job_dir=str(job),
                   examples=[{"input": [3, 2, 9, 1], "expected": [1, 9, 2, 3], "predicted": [1, 9, 2, 3]}])
    (job / "results.json").write_text(json.dumps(results))


def test_the_page_holds_every_run_every_chart_and_keeps_experiments_apart(tmp_path):
    for seed in range(3):
        run_result(tmp_path / f"a{seed}", 0.3 + seed / 10, seed=seed)
        history(tmp_path / f"a{seed}", [2.3, 2.0, 1.8 - seed / 10], stopped_early=seed == 0)
    run_result(tmp_path / "b0", 0.5, **{"data.n_train": 500})  # another experiment, from before histories
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "results.json").write_text(json.dumps({"status": "failed", "error": "disk full"}))
    page = write_report([tmp_path], quiet=True).read_text()
    assert page.count("<h2>") == 3 and "data.n_train=500" in page and "Jobs that did not finish" in page
    assert len(re.findall(r"<tbody>.*?</tbody>", page)) == 3 and page.count("<tr><td data-v=") == 5
    assert page.count('<div class="chart"><svg') == 4 + 2  # the table, curves (loss, acc), positions; no curves
    assert "1 of 1 runs have no per-epoch history" in page and "[3, 2, 9, 1]→[1, 9, 2, 3] ✓" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.csv").is_file()


def table_rows(page: str, index: int) -> list[dict[str, str]]:
    """The `index`-th table of runs on a page, as rows {heading: shown value}."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables, self.row, self.heads, self.in_heads = [], None, [], False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table" and attrs.get("class") == "runs":
                self.tables.append({"heads": [], "rows": []})
            elif tag == "tr" and self.tables:
                self.in_heads = attrs.get("class") == "heads"
                self.row = [] if attrs.get("class") not in ("heads", "filters") else None
            elif tag == "td" and self.row is not None:
                self.row.append(attrs.get("data-v", ""))

        def handle_endtag(self, tag):
            if tag == "tr" and self.row is not None and self.tables:
                self.tables[-1]["rows"].append(self.row)
                self.row = None

        def handle_data(self, data):
            if self.in_heads and self.tables and data.strip():
                self.tables[-1]["heads"].append(data.strip())

        def handle_startendtag(self, tag, attrs):
            self.handle_starttag(tag, attrs)

    parser = Tables()
    parser.feed(page)
    table = parser.tables[index]
    return [dict(zip(table["heads"], row, strict=True)) for row in table["rows"]]


def test_the_table_of_runs_shows_each_value_under_its_heading_and_lists_every_run_that_did_not_finish(tmp_path):
    run_result(tmp_path / "0_one", 0.61, seed=7, timesteps=4, model="return_state")
    history(tmp_path / "0_one", [2.0, 1.5])
    results = json.loads((tmp_path / "0_one" / "results.json").read_text())
    (tmp_path / "0_one" / "results.json").write_text(json.dumps({**results, "val_acc": 0.42, "val_loss": 1.5}))
    for name, status in (("1_failed", "failed"), ("2_interrupted", "interrupted")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"status": status, "error": f"{status} here",
                                                                  "seed": 3}))
    page = write_report([tmp_path], quiet=True).read_text()
    (row,) = table_rows(page, 0)
    assert (row["run"], row["model"], row["timesteps"], row["seed"]) == ("0_one", "return_state", "4", "7")
    assert (row["test_acc"], row["val_acc"], row["val_loss"], row["epochs_run"]) == ("0.61", "0.42", "1.5", "10")
    not_finished = table_rows(page, 1)
    assert sorted(r["run"] for r in not_finished) == ["1_failed", "2_interrupted"]
    assert all(r["seed"] == "3" for r in not_finished)


def test_the_sweep_size_is_the_product_of_its_swept_values():
    """As Hydra's basic sweeper expands them: the experiment's `hydra.sweeper.params`, then the command line's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        table = compose("train", overrides=["experiment=tutorial_table"], return_hydra_config=True)
        plain = compose("train", return_hydra_config=True)
    assert sweep_size(table) == 5 * 4 * 3
    with open_dict(plain):
        plain.hydra.overrides.task = ["model=return_state,both_outputs", "seed=range(3)", "data.n_train=300"]
    assert sweep_size(plain) == 6
    with open_dict(table):
        table.hydra.overrides.task = ["seed=0,1"]  # the command line's seeds replace the experiment's
    assert sweep_size(table) == 5 * 4 * 2


def test_the_folders_tell_ended_failed_skipped_refused_busy_and_running_jobs(tmp_path):
    from seqrev.sweepfolder import record_outcome

    started = time.time()
    old = started - 100
    import os

    for name in ("before", "elsewhere"):  # finished in an earlier start: skipped by this one, or not its job
        run_result(tmp_path / name, 0.5)
        os.utime(tmp_path / name / "results.json", (old, old))
    record_outcome(tmp_path, tmp_path / "before", "skipped")
    run_result(tmp_path / "done", 0.5)
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "results.json").write_text(json.dumps({"status": "failed", "fit_seconds": 0}))
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / ".seqrev.lock").write_text("")
    (tmp_path / "waiting").mkdir()
    for name, status in (("other_job", "refused"), ("held", "busy")):
        run_result(tmp_path / name, 0.5)  # finished by another process meanwhile: still not this sweep's
        (tmp_path / name / ".seqrev.lock").write_text("")  # held by another process, not running in this sweep
        record_outcome(tmp_path, tmp_path / name, status, f"why {name}")
    (tmp_path / "lost" / ".hydra").mkdir(parents=True)  # began in this start, then left nothing (a full disk)
    (tmp_path / "lost" / ".hydra" / "config.yaml").write_text("{}")
    tally = read_folders(tmp_path, started, {"done": started})
    assert (tally.done, tally.failed, tally.skipped, tally.refused, tally.busy, tally.running) == (1, 1, 1, 1, 1, 1)
    assert tally.not_run == {"other_job": "refused: why other_job", "held": "busy: why held"}
    assert tally.unfinished == 0 and "lost" not in tally.endings  # while the sweep runs it may be starting
    ended = read_folders(tmp_path, started, {"done": started}, final=True)  # once the sweep has ended: counted
    assert ended.unfinished == 1 and ended.ended == tally.ended + 1 and ended.running == 1
    assert ended.not_run["lost"] == "ended without results: see its train.log"
    assert "waiting" not in ended.not_run  # a folder with no start in it is no job of this start
    line = progress_line(Tally(done=3, failed=1, running=2, durations=[60.0] * 4), total=10, elapsed=125, workers=2)
    assert line == ("sweep: 4/10 ended (3 done, 1 failed, 0 skipped), 2 running; 2m05s elapsed, "
                    "about 3m00s left")
    line = progress_line(Tally(done=1, skipped=2, refused=1, busy=1, running=1), total=6, elapsed=5, workers=1)
    assert line == "sweep: 5/6 ended (1 done, 0 failed, 2 skipped, 1 refused, 1 busy), 1 running; 0m05s elapsed"
    line = progress_line(Tally(done=1, unfinished=1), total=2, elapsed=5, workers=1)
    assert line == "sweep: 2/2 ended (1 done, 0 failed, 0 skipped, 1 unfinished), 0 running; 0m05s elapsed"


def test_the_same_sweep_started_twice_at_once_counts_in_each_start_only_its_own_jobs(tmp_path):
    from seqrev.sweepfolder import new_start, record_outcome, record_trained

    started = time.time()
    for name in ("0_a", "1_b", "2_c"):  # trained meanwhile: 0_a by the first start, 1_b and 2_c by the second,
        run_result(tmp_path / name, 0.5)  # before the first start reached 2_c
    with new_start():
        record_trained(tmp_path, tmp_path / "0_a")
        record_outcome(tmp_path, tmp_path / "1_b", "busy", "running elsewhere")
        first = read_folders(tmp_path, started, {}, final=True)
    with new_start():
        record_outcome(tmp_path, tmp_path / "0_a", "skipped")
        record_trained(tmp_path, tmp_path / "1_b")
        record_trained(tmp_path, tmp_path / "2_c")
        second = read_folders(tmp_path, started, {}, final=True)
    assert (first.done, first.skipped, first.busy, first.unfinished) == (1, 0, 1, 0)
    assert sorted(first.endings) == ["0_a", "1_b"] and first.endings["0_a"].startswith("done")
    assert first.not_run == {"1_b": "busy: running elsewhere"}
    assert (second.done, second.skipped, second.busy, second.unfinished) == (2, 1, 0, 0)
    assert second.endings["0_a"] == "skipped (finished)" and second.endings["2_c"].startswith("done")
    (tmp_path / "3_d" / ".hydra").mkdir(parents=True)  # the third start's job, killed: its lock left behind
    (tmp_path / "3_d" / ".hydra" / "config.yaml").write_text("{}")
    (tmp_path / "3_d" / ".seqrev.lock").write_text("")
    with new_start():
        record_trained(tmp_path, tmp_path / "3_d")
        assert read_folders(tmp_path, started, {}).running == 1
        assert read_folders(tmp_path, started, {}, final=True).not_run == {
            "3_d": "ended without results: see its train.log"}


def test_a_sweep_prints_its_progress_and_ends_with_its_report(tmp_path, seqrev_train):
    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "model=return_state,both_outputs", "data.n_train=200", "data.n_test=50",
                        "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("sweep")]
    assert re.fullmatch(r"sweep finished in \dm\d\ds: 2 done, 0 failed, 0 skipped; report: .*report\.html", lines[-1])
    assert (sweep / "report.html").is_file()
    again = seqrev_train("-m", "model=return_state,both_outputs", "data.n_train=200", "data.n_test=50",
                         "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}")
    assert "0 done, 0 failed, 2 skipped" in again.stdout


def test_a_sweeps_console_is_a_line_per_job_and_a_few_more(tmp_path, seqrev_train):
    """By default a sweep prints its plan, its progress, one line per job as it ends (name, status, scores,
    epochs, time) and its summary; each job's own lines go to its train.log. With sweep_console=all, every
    job's lines come too, each after its number."""
    sweep = tmp_path / "sweep"
    line = ("-m", "model=return_state,both_outputs", "seed=0,1", "data.n_train=200", "data.n_test=50",
            "trainer.max_epochs=1")
    done = seqrev_train(*line, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    jobs = [line for line in lines if line.startswith("job ")]
    assert len(jobs) == 4 and len(lines) <= 4 + 10, done.stdout
    assert re.fullmatch(r"job 0_model=return_state,timesteps=4,units=16,seed=0: done, test acc \d+\.\d\d%, seq acc "
                        r"\d+\.\d\d%, 1 epochs, \d+\.\d s \(\d/4 ended\)", jobs[0]), jobs[0]
    assert "PREDICTION ACCURACY" not in done.stdout and "#0 : " not in done.stdout  # no job's own lines
    assert "PREDICTION ACCURACY (%):" in next(sweep.glob("0_*/train.log")).read_text()
    everything = seqrev_train(*line, "sweep_console=all", f"hydra.sweep.dir={tmp_path / 'all'}")
    assert everything.returncode == 0, everything.stderr[-2000:]
    assert "[#0] PREDICTION ACCURACY (%):" in everything.stdout and "[#3] PREDICTION ACCURACY (%):" in everything.stdout


def chromium() -> str | None:
    """The system's Chromium, when Playwright (the test extra) can drive it."""
    import importlib.util

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found if importlib.util.find_spec("playwright") is not None else None


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium) and Playwright")
def test_the_tutorial_tables_page_in_a_real_browser(tmp_path, seqrev_train):
    """The 60 jobs of `experiment=tutorial_table` (few epochs, packed): the page opens from disk in headless
    Chromium with no console error and no request but itself, a row per run, every chart drawn (the table
    with its intervals, the wiring-by-wiring matrix of each cell, the curves, the positions), a row per
    comparison, sorting by a column reorders the rows, and the file is at most 5 MB."""
    from playwright.sync_api import sync_playwright

    sweep = tmp_path / "sweep"
    done = seqrev_train("-m", "hydra/launcher=packed", "experiment=tutorial_table", "trainer.max_epochs=4",
                        "data.n_train=300", "data.n_test=50", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-2000:]
    page_file = sweep / "report.html"
    assert page_file.stat().st_size <= 5 * 2**20
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors, requests = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_file.as_uri())
        assert errors == [] and requests == [page_file.as_uri()]
        assert page.locator("table.runs tbody tr").count() == 60
        charts = page.locator("div.chart svg")
        assert charts.count() == 5
        for i in range(5):
            box = charts.nth(i).bounding_box()
            assert box["width"] > 300 and box["height"] > 200 and charts.nth(i).locator("path").count() > 20
        assert charts.nth(0).locator("text", has_text="mean with 95% interval").count() >= 1
        matrix = charts.nth(1)  # 4 cells of 5 wirings: 20 squares each, marked with their verdicts
        assert "settled" in matrix.text_content() and matrix.locator("text").count() >= 4 * 20
        # 10 pairs per cell and each wiring against the mode baseline (5 a cell); not against the tutorial's
        # figures, which stand only beside runs made with its protocol (100 epochs of 2,000 sequences)
        assert page.locator("table.comparisons tr").count() == 1 + 4 * (10 + 5)
        table = page.locator("table.runs").first
        column = [h.inner_text() for h in table.locator("tr.heads th").all()].index("test_acc")
        values = lambda: [float(r.locator("td").nth(column).get_attribute("data-v"))  # noqa: E731
                          for r in table.locator("tbody tr").all()]
        before = values()
        table.locator("tr.heads th").nth(column).click()
        assert values() == sorted(before) != before
        table.locator("tr.heads th").nth(column).click()
        assert values() == sorted(before, reverse=True)
        table.locator("tr.filters input").nth(1).fill("both_outputs")
        assert table.locator("tbody tr:visible").count() == 12
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
