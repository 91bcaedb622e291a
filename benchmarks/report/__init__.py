"""The benchmark report: read the runs back from MLflow, then tables, fits, extrapolations and figures."""

from benchmarks.report.collect import collect_runs
from benchmarks.report.fits import Fit, crossing_size, loglog_fit, size_to_reach
from benchmarks.report.writer import write_report

__all__ = ["Fit", "collect_runs", "crossing_size", "loglog_fit", "size_to_reach", "write_report"]
