import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from ntkscope.cli import app
from ntkscope.runner import InlineExecutor, expand, run_sweep

PNG = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A store with two studies' runs (the toy's failed run included)."""
    directory = tmp_path_factory.mktemp("results")
    spec = {"study": "width_convergence", "fixed": {"n": 8, "widths": [16, 32], "seeds": 2},
            "product": {"activation": ["relu", "erf"]}}  # fmt: skip
    run_sweep(expand(spec), directory, InlineExecutor())
    return directory


def render(directory):
    result = CliRunner().invoke(app, ["report", str(directory)])
    assert result.exit_code == 0, result.output
    return directory / "report" / "index.html"


def test_every_image_exists_and_is_a_png(results):
    page = render(results)
    parser = _Images()
    parser.feed(page.read_text())
    assert len(parser.sources) == 2  # width_convergence: distance_vs_width, slopes
    for source in parser.sources:
        assert (page.parent / source).read_bytes().startswith(PNG)


def test_tables_configs_versions_and_times(results):
    html = render(results).read_text()
    for text in ("width_convergence", "configs", "metrics", "distances", "slope", "torch",
                 "run time", "2 done"):  # fmt: skip
        assert text in html, text


def test_failed_runs_are_listed(toy, toy_store):
    html = render(toy_store).read_text()
    assert "failed runs" in html and "RuntimeError: toy failure for value 3" in html


def test_report_of_a_missing_store(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: dir: no ntkscope store")


@pytest.mark.slow
def test_page_renders_in_headless_chromium(results, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    page = render(results)
    screenshot = tmp_path / "report.png"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        "--window-size=1200,2400",
        page.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)  # fmt: skip
    assert screenshot.read_bytes().startswith(PNG)
    dom = subprocess.run([*command[:4], "--dump-dom", page.resolve().as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    assert len(re.findall(r"<img ", dom)) == 2 and "width_convergence" in dom


def test_each_figure_has_a_caption_computed_from_the_results(results):
    """The caption quotes the stored slopes, so it changes with the data."""
    html = render(results).read_text()
    slopes = re.findall(r"Fitted exponents (-?\d\.\d\d) to (-?\d\.\d\d) \(theory −1/2\)", html)
    assert len(slopes) == 1, html
    assert re.search(r"Fitted exponent per run: activation=(relu|erf) -?\d\.\d\d", html)
