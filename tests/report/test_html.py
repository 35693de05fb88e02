import pandas as pd
from matplotlib.figure import Figure

from ntkscope.report.html import MAX_ROWS, Section, write_page

PNG = b"\x89PNG\r\n\x1a\n"


def test_page_with_every_kind_of_content(tmp_path):
    figure = Figure()
    figure.subplots().plot([1, 2], [3, 4])
    existing = tmp_path / "plot.png"
    figure.savefig(existing)
    inner = Section("Inner <b>", text="x < y")
    section = Section(
        "Kernel & more",
        text="First paragraph.\n\nSecond <script>.",
        figures={"spectrum": figure},
        images=[existing],
        tables={"runs": pd.DataFrame({"a": [1.23456789], "b": ["<i>"]})},
        facts={"width": 512},
        sections=[inner],
    )
    page = write_page(tmp_path / "site" / "index.html", "Title", [section], text="Intro")
    html = page.read_text()
    assert "<h1" in html and "<h2" in html and "<h3" in html
    assert "Second &lt;script&gt;." in html and "<script>" not in html  # text is escaped
    assert "&lt;i&gt;" in html and "1.235" in html and "<dt>width</dt><dd>512</dd>" in html
    images = sorted((tmp_path / "site" / "images").iterdir())
    assert len(images) == 2 and all(p.read_bytes().startswith(PNG) for p in images)
    assert all(f'src="images/{p.name}"' in html for p in images)


def test_long_tables_are_cut(tmp_path):
    frame = pd.DataFrame({"i": range(MAX_ROWS + 5)})
    html = write_page(tmp_path / "p.html", "t", [Section("s", tables={"t": frame})]).read_text()
    assert f"first {MAX_ROWS} of {MAX_ROWS + 5} rows" in html
    assert f"<td>{MAX_ROWS - 1}</td>" in html and f"<td>{MAX_ROWS}</td>" not in html
