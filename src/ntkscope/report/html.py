"""A static HTML page: sections of text, PNG figures, tables and facts. No JavaScript.

Generic: ``ntkscope report`` renders result stores with it, and any other report can::

    from ntkscope.report.html import Section, write_page
    write_page("out/index.html", "My report", [
        Section("Kernel", text="...", figures={"spectrum": fig}, tables={"runs": df},
                facts={"width": 512}),
    ])

Figures are saved as PNG files in ``images/`` beside the page; existing PNG files named in
``images`` are copied there, so the page's folder is self-contained. A section's text may
use a little docstring markup (``Section.markup``): ````code````, ``**bold**``, ``*italic*``,
``- `` bullet lists and indented blocks (shown preformatted). ``folded`` sections are
``<details>`` that the reader opens; ``write_page`` puts a table of contents of the top
sections (with each section's ``note``) under the title.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; } caption { text-align: left; font-weight: bold; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; }
dt { font-weight: bold; } pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; }
.scroll { overflow-x: auto; }
figcaption { font-size: 14px; color: #333; margin-bottom: 1em; }
details { margin: 0.5em 0 1em; } summary { cursor: pointer; font-weight: bold; }
nav li { margin: 2px 0; } .note { color: #555; }
table.text td, table.text th { text-align: left; vertical-align: top; }
"""
MAX_ROWS = 50
"""Tables longer than this show their first rows only (the full data stay in the store)."""


@dataclass(frozen=True)
class Section:
    """One titled part of a page; sections nest.

    Attributes:
        title: heading.
        text: paragraphs of plain text (blank lines separate them); escaped, not HTML.
        figures: name -> matplotlib Figure, saved as PNG.
        images: paths of existing PNG files to show.
        tables: caption -> DataFrame.
        facts: label -> value, shown as a definition list.
        sections: subsections.
        captions: figure name -> caption, shown under the figure.
        markup: render the text's docstring markup (module docstring) instead of plain text.
        folded: show the section as a ``<details>`` block, closed until the reader opens it.
        note: a short remark shown beside the title in the table of contents.
    """

    title: str
    text: str = ""
    figures: Mapping[str, Figure] = field(default_factory=dict)
    images: Sequence[str | Path] = ()
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    facts: Mapping[str, object] = field(default_factory=dict)
    sections: Sequence[Section] = ()
    captions: Mapping[str, str] = field(default_factory=dict)
    markup: bool = False
    folded: bool = False
    note: str = ""


_INLINE = [
    (re.compile(r"``(.+?)``"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<i>\1</i>"),
    (re.compile(r"(?<![\w`])`([^`]+?)`(?![\w`])"), r"<code>\1</code>"),
]


def _inline(text: str) -> str:
    """Escaped text with ``code``, **bold**, *italic* and `name` rendered."""
    text = html.escape(text)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return text


def _block(block: str) -> str:
    """One blank-line separated block: a bullet list, a preformatted block or a paragraph."""
    lines = block.splitlines()
    if all(line.startswith("    ") for line in lines):
        return f"<pre>{html.escape(chr(10).join(line[4:] for line in lines))}</pre>"
    if lines[0].startswith("- "):
        items, current = [], []
        for line in lines:
            if line.startswith("- ") and current:
                items.append(" ".join(current))
                current = []
            current.append(line.removeprefix("- ").strip())
        items.append(" ".join(current))
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>"
    return f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>"


def _text(text: str, markup: bool) -> list[str]:
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", text) if b.strip()]
    if markup:
        return [_block(b) for b in blocks]
    return [f"<p>{html.escape(b.strip())}</p>" for b in blocks]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _table(caption: str, frame: pd.DataFrame) -> str:
    shown = frame.head(MAX_ROWS)
    note = f" (first {MAX_ROWS} of {len(frame)} rows)" if len(frame) > MAX_ROWS else ""
    words = len(frame.columns) and all(map(pd.api.types.is_string_dtype, frame.dtypes))
    body = shown.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="",
                         classes="text" if words else None)  # fmt: skip
    return f'<div class="scroll"><p><b>{html.escape(caption + note)}</b></p>{body}</div>'


def _facts(facts: Mapping[str, object]) -> str:
    items = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items()
    )
    return f"<dl>{items}</dl>" if facts else ""


def _image(src: str, alt: str, caption: str = "") -> str:
    below = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">{below}</figure>'


def _render(section: Section, level: int, prefix: str, images: Path) -> str:
    """HTML of a section; writes its figures and copies its images into ``images``."""
    slug = f"{prefix}{_slug(section.title)}"
    title = html.escape(section.title)
    parts = [] if section.folded else [f'<h{level} id="{slug}">{title}</h{level}>']
    parts += _text(section.text, section.markup)
    parts.append(_facts(section.facts))
    for name, figure in section.figures.items():
        file = f"{slug}--{_slug(name)}.png"
        figure.savefig(images / file, format="png", dpi=110)
        parts.append(_image(f"{images.name}/{file}", name, section.captions.get(name, "")))
    for index, source in enumerate(section.images):
        file = f"{slug}--{index}-{Path(source).name}"
        shutil.copyfile(source, images / file)
        parts.append(_image(f"{images.name}/{file}", Path(source).stem))
    parts += [_table(caption, frame) for caption, frame in section.tables.items()]
    parts += [_render(s, min(level + 1, 6), f"{slug}--", images) for s in section.sections]
    body = "\n".join(p for p in parts if p)
    if section.folded:
        return f'<details id="{slug}"><summary>{title}</summary>\n{body}\n</details>'
    return body


def _contents(sections: Sequence[Section]) -> str:
    """A table of contents of the top sections, linking their anchors, with their notes."""
    items = "".join(
        f'<li><a href="#{_slug(s.title)}">{html.escape(s.title)}</a>'
        + (f' <span class="note">— {html.escape(s.note)}</span>' if s.note else "")
        + "</li>"
        for s in sections
    )
    return f"<nav><h2>Contents</h2><ol>{items}</ol></nav>"


def write_page(path: str | Path, title: str, sections: Sequence[Section], text: str = "") -> Path:
    """Write a self-contained static HTML page and its PNG images.

    Args:
        path: the ``.html`` file; images go to ``images/`` in its folder (created).
        title: page title and top heading.
        sections: the page's sections, in order, each an ``<h2>`` (subsections ``<h3>``...).
        text: paragraphs under the title.

    Returns:
        ``path``.
    """
    path = Path(path)
    images = path.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    body = _render(Section(title, text), 1, "", images) + "\n" + _contents(sections)
    body += "\n" + "\n".join(_render(s, 2, "", images) for s in sections)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(path)
    return path
