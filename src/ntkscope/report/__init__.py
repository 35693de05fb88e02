"""Reports: a generic static HTML page writer and the report of a result store."""

from ntkscope.report.html import Section, write_page
from ntkscope.report.study_report import write_report

__all__ = ["Section", "write_page", "write_report"]
