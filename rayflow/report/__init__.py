"""The report layer: statistics over result rows, fake-set summaries and sample grids, report.html."""

from rayflow.report.html import render_report, write_report
from rayflow.report.summary import format_results, headroom, row, summarize

__all__ = ["format_results", "headroom", "row", "render_report", "summarize", "write_report"]
