import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from ntkscope.cli import app
from ntkscope.report.study_report import _order
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
    assert len(re.findall(r"<figcaption>", dom)) == 2 and "<details" in dom
    assert re.search(r'<nav>.*href="#findings".*href="#width-convergence"', dom, flags=re.S)


def test_each_figure_has_a_caption_computed_from_the_results(results):
    """The caption quotes the stored slopes, so it changes with the data."""
    html = render(results).read_text()
    slopes = re.findall(r"Fitted exponents (-?\d\.\d\d) to (-?\d\.\d\d) \(theory −1/2\)", html)
    assert len(slopes) == 1, html
    assert re.search(r"Fitted exponent per run: activation=(relu|erf) -?\d\.\d\d", html)


def test_findings_table_leads_the_page(results):
    """Contents (with each study's verdicts), then the findings table, then the studies."""
    html = render(results).read_text()
    nav, findings, study = (html.index(t) for t in
                            ("<nav>", 'id="findings"', 'id="width-convergence"'))  # fmt: skip
    assert nav < findings < study
    contents = html[nav : html.index("</nav>")]
    assert re.search(r'href="#width-convergence">width_convergence</a> <span class="note">— 1 '
                     r"(reproduced|not reproduced|inconclusive)", contents)  # fmt: skip
    table = html[findings:study]
    for text in ("the eNTK&#x27;s distance to the infinite NTK falls as width^(−1/2)",
                 "Hanin &amp; Nica 2019", "fitted exponent", "lies in [−0.75, −0.25]"):  # fmt: skip
        assert text in table.replace("'", "&#x27;"), text


def test_studies_read_as_formatted_text_with_tables_folded(results):
    html = render(results).read_text()
    study = html[html.index('id="width-convergence"') :]
    assert "``" not in study and "**" not in study  # docstring markup is rendered
    assert "<b>reproduced</b>" in study or "<b>inconclusive</b>" in study  # summary paragraph
    assert re.search(r'<details id="[^"]*tables-behind-the-figures"><summary>', study)
    assert len(re.findall(r"<figure><img [^>]*><figcaption>", study)) == 2
    configs = study[study.index("<b>configs</b>") :]
    assert "<td>16</td>" in configs or "<td>8</td>" in configs
    assert not re.search(r"<td>\d+\.0</td>", configs[: configs.index("</table>")])


def test_studies_follow_the_argument():
    assert _order(["continual", "zz_user", "width_convergence", "phase_diagram"]) == [
        "width_convergence", "phase_diagram", "continual", "zz_user"]  # fmt: skip


def test_report_prints_the_findings_table(results):
    result = CliRunner().invoke(app, ["report", str(results)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "published claims tested" in result.output and "width_convergence" in result.output
    assert re.search(r"│ (reproduced|not reproduced|inconclusive)", result.output)
    assert (results / "report" / "findings.csv").read_text().startswith("study,claim,source")
