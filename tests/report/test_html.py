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


def test_docstring_markup_is_rendered_and_escaped(tmp_path):
    text = (
        "Uses ``empirical_ntk`` and **bold** and *italic* and `name`, <b>not html</b>.\n\n"
        "- first item\n  continued\n- second ``x``\n\n"
        "    Θ = Σ + Θ·Σ̇\n    f < g"
    )
    html = write_page(tmp_path / "p.html", "t", [Section("s", text=text, markup=True)]).read_text()
    assert "<code>empirical_ntk</code>" in html and "<b>bold</b>" in html
    assert "<i>italic</i>" in html and "<code>name</code>" in html
    assert "&lt;b&gt;not html&lt;/b&gt;" in html and "``" not in html and "**" not in html
    assert "<ul><li>first item continued</li><li>second <code>x</code></li></ul>" in html
    assert "<pre>Θ = Σ + Θ·Σ̇\nf &lt; g</pre>" in html
    plain = write_page(tmp_path / "q.html", "t", [Section("s", text="``raw``")]).read_text()
    assert "``raw``" in plain  # markup only when asked


def test_contents_folded_sections_and_figure_captions(tmp_path):
    figure = Figure()
    figure.subplots().plot([1, 2], [3, 4])
    folded = Section("Data", tables={"t": pd.DataFrame({"a": [1]})}, folded=True)
    sections = [
        Section("First study", note="1 reproduced", figures={"fig": figure},
                captions={"fig": "What the **data** say."}, sections=[folded]),
        Section("Second", note=""),
    ]  # fmt: skip
    html = write_page(tmp_path / "p.html", "t", sections).read_text()
    assert '<li><a href="#first-study">First study</a> <span class="note">— 1 reproduced' in html
    assert '<li><a href="#second">Second</a></li>' in html and 'id="second"' in html
    assert "<figcaption>What the <b>data</b> say.</figcaption></figure>" in html
    assert '<details id="first-study--data"><summary>Data</summary>' in html
    assert html.index("<nav>") < html.index('id="first-study"')
