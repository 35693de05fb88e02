"""``ntkscope report DIR``: one HTML page of every study in a result store.

At the top, a table of contents with each study's verdicts, and the findings table: one row
per published claim the studies test (the studies' ``claims``), with its source, the
measured numbers with their 95% intervals, the verdict and the rule that decided it. Then
the studies in the order of the argument (`ntkscope.studies.names`; others after them):
per study a one-paragraph summary, its figures (drawn from the stored results) each with
its caption computed from the results (the study's ``captions``), the method (the study's
docstring, formatted), and, folded, the tables behind the figures, the configs and metrics
of every run, failed runs with their errors, versions and run times.
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from ntkscope import studies
from ntkscope.report.html import Section, write_page
from ntkscope.runner.store import Status, load
from ntkscope.store import finished
from ntkscope.studies import Claim, Finding

REPORT = Path("report") / "index.html"
"""Where the page goes, relative to the results directory."""
FINDINGS = Path("report") / "findings.csv"
"""The findings table as CSV, beside the page (what ``ntkscope report`` prints)."""


def _short(runs: pd.DataFrame) -> pd.Series:
    return runs.hash.str[:12]


def _value(value: object) -> str:
    """A config value as written: integers without ".0" (a column with gaps is float)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _config_table(runs: pd.DataFrame) -> pd.DataFrame:
    config = runs.filter(like="config.").dropna(axis=1, how="all")  # other studies' fields
    config = config.rename(columns=lambda c: c.removeprefix("config."))
    return config.map(_value).assign(status=runs.status).set_index(_short(runs)).reset_index()


def _metrics_table(runs: pd.DataFrame) -> pd.DataFrame:
    metrics = runs.filter(like="metrics.").dropna(axis=1, how="all")
    metrics = metrics.rename(columns=lambda c: c.removeprefix("metrics."))
    return metrics.assign(seconds=runs.seconds).set_index(_short(runs)).reset_index()


def _failures(runs: pd.DataFrame) -> pd.DataFrame:
    failed = runs[runs.status == Status.FAILED]
    last_line = failed.error.fillna("").map(lambda e: e.strip().splitlines()[-1] if e else "")
    return pd.DataFrame({"hash": _short(failed), "error": last_line})


def _facts(runs: pd.DataFrame) -> dict[str, object]:
    counts = runs.status.value_counts()
    finished = runs[runs.status == Status.DONE]
    versions = finished[["python", "torch", "numpy", "ntkscope"]].drop_duplicates()
    return {
        "runs": ", ".join(f"{counts.get(s, 0)} {s}" for s in Status),
        "run time": f"{finished.seconds.sum():.1f} s in all, {finished.seconds.median():.2f} s "
        "median per run",
        "hosts": ", ".join(sorted(finished.host.dropna().unique())),
        "versions": "; ".join(
            f"python {v.python}, torch {v.torch}, numpy {v.numpy}, ntkscope {v.ntkscope}"
            for v in versions.itertuples()
        ),
    }


def _summary(description: str, claims: list[Claim]) -> tuple[str, str]:
    """(summary paragraph, method text): the docstring's first line with what became of
    each claim, and the rest of the docstring."""
    first, _, rest = description.partition("\n\n")
    verdicts = " ".join(
        f"**{c.finding.value}**: {c.claim} ({c.source}); measured {c.measured}." for c in claims
    )
    return f"{first.strip()} {verdicts}".strip(), rest


def _tally(claims: list[Claim]) -> str:
    """ "2 reproduced, 1 inconclusive" (no claims: "")."""
    counts = Counter(c.finding.value for c in claims)
    return ", ".join(f"{counts[f.value]} {f.value}" for f in Finding if counts[f.value])


def _study_section(directory: Path, name: str, runs: pd.DataFrame) -> tuple[Section, list]:
    """The study's section and its claims (as (study, claim) pairs)."""
    done = runs[runs.status == Status.DONE]
    description, problem = "", ""
    figures, captions, claims, tables = {}, {}, [], {}
    try:
        study = studies.get(name)
        description = study.description
        results = finished(directory, done)
        tables = dict(results.tables)
        if len(done):
            figures, captions = study.figures(results), study.captions(results)
            claims = study.claims(results)
    except Exception as error:  # a report shows what it can
        problem = f"Figures not drawn: {type(error).__name__}: {error}"
    summary, method = _summary(description, claims)
    tables = {"configs": _config_table(runs), "metrics": _metrics_table(done)} | tables
    failures = _failures(runs)
    if len(failures):
        tables["failed runs"] = failures
    parts = [
        Section("Figures", figures=figures, captions=captions),
        Section("Method", text=method, markup=True),
        Section("Tables behind the figures", tables=tables, facts=_facts(runs), folded=True),
    ]
    text = "\n\n".join(t for t in (summary, problem) if t)
    own = {"published claims tested": _claims_table(claims)} if claims else {}
    section = Section(name, text=text, markup=True, tables=own, sections=parts,
                      note=_tally(claims) or "no published claim tested")  # fmt: skip
    return section, [(name, c) for c in claims]


def _claims_table(claims: list[Claim], study: str | None = None) -> pd.DataFrame:
    rows = [
        {"study": study, "claim": c.claim, "source": c.source, "measured (95% interval)":
         c.measured, "verdict": c.finding.value, "rule": c.rule}
        for c in claims
    ]  # fmt: skip
    return pd.DataFrame(rows).drop(columns=[] if study else ["study"])


def _order(names: list[str]) -> list[str]:
    """Registered studies in the order of the argument, then any others by name."""
    registered = [n for n in studies.names() if n in names]
    return registered + sorted(set(names) - set(registered))


def findings(claims: list[tuple[str, Claim]]) -> pd.DataFrame:
    """The findings table: one row per claim, with its study."""
    frames = [_claims_table([c], study) for study, c in claims]
    columns = ["study", "claim", "source", "measured (95% interval)", "verdict", "rule"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


RULES = (
    "Verdicts: reproduced when the 95% interval of the measured quantity lies where the claim "
    "says, not reproduced when it lies on the other side, inconclusive when the interval "
    "straddles the boundary or there are too few runs for an interval (each row states its "
    "rule)."
)


def write_report(directory: str | Path) -> Path:
    """Render the store in ``directory`` to ``directory/report/index.html`` (and its findings
    table to ``report/findings.csv``); returns the page's path.

    Raises:
        ValueError: when ``directory`` holds no store.
    """
    directory = Path(directory)
    runs = load(directory)
    groups = dict(tuple(runs.groupby("study")))
    built = [_study_section(directory, n, groups[n]) for n in _order(list(groups))]
    claims = [claim for _, study_claims in built for claim in study_claims]
    table = findings(claims)
    top = Section("Findings", text=RULES, tables={"published claims tested": table},
                  note=_tally([c for _, c in claims]) or "no claims")  # fmt: skip
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"Result store {directory.resolve()}: {len(runs)} runs, rendered {now}."
    sections = [top, *(section for section, _ in built)]
    page = write_page(directory / REPORT, "ntkscope report", sections, text=text)
    table.to_csv(directory / FINDINGS, index=False)
    return page
