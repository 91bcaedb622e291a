"""Soak test of ``cgat-bench run``: a smoke manifest killed (SIGKILL) again and again, then finished.

    python -m benchmarks.perf.soak                    # 20 kills, seed 0
    python -m benchmarks.perf.soak --n 4 --dir /tmp/soak --keep

First an uninterrupted reference run of the manifest into its own store (fresh MLflow database, work
folder and graph cache). Then the soak store: ``--n`` attempts, each starting ``cgat-bench run`` (a
subprocess in its own process group) and SIGKILLing the group at a chosen moment, and a last run to
completion without a kill. Finally every run of the reference must be FINISHED exactly once in the
soak store, no run may be left RUNNING, and every final metric and every epoch's logged metrics must
equal the reference's.

Where a kill lands is aimed, not left to a random clock: the script reads the merged stdout/stderr of
``cgat-bench run`` (progress on, so that epoch lines come as plain lines) and kills a random short time
after a phase's marker appears:

    startup            a random moment before the data is loaded (graph cache present)
    graph_build        the graph cache deleted first; a moment after the build began (pymatgen's neighbour
                       search mapped into the process), or as soon as the cache pack's temporary file appears
    run_start          after "[run]": claims, parent/child runs, params and config logged to MLflow
    training           after "[run]": inside the epochs
    checkpoint_write   as soon as a checkpoint's temporary file appears (inotify: the atomic write is in
                       progress for milliseconds)
    epoch_end          just after an "epoch i/n" line: the epoch's MLflow metrics being logged
    run_end            after the last "epoch n/n" line: test evaluation, final metrics and artifacts
    report             after "done in" (the report), or just after sources.md is written (the report
                       run being logged to MLflow); these attempts run without --no-report
    exit               (landed only) after the report's "report:" line

The phase recorded for a kill is where it landed (the last marker the killed process printed, whether
it had begun building graphs, and a temporary file left behind by a write cut short), which may differ
from the one aimed at; the table counts both. Delays after a marker are scaled by the reference run's
timing (epoch length, run set-up, report). The cgat-bench processes run in this process's session, so
at its CPU priority. Their output is kept in <dir>/logs/.
Every third attempt runs two workers at once: two ``cgat-bench run`` processes (both killed together,
or one and then the other a little later) or one with ``--workers 2``.

Modules: ``site`` (manifest, store folders, command line), ``process`` (one cgat-bench process),
``temp_watch`` (atomic writes in progress), ``kills`` (aiming and the attempts), ``stores`` (the
comparison with the reference), ``cli`` (the whole soak and its table).
"""

from benchmarks.perf.soak.cli import build_parser, main, summarize
from benchmarks.perf.soak.kills import PHASES, Timing, landed_phase, plan_attempts
from benchmarks.perf.soak.process import marker_of
from benchmarks.perf.soak.stores import KEY_METRICS, RunRecord, compare_stores, read_store
from benchmarks.perf.soak.temp_watch import TempWatch, temp_files

__all__ = [
    "KEY_METRICS", "PHASES", "RunRecord", "TempWatch", "Timing", "build_parser", "compare_stores", "landed_phase",
    "main", "marker_of", "plan_attempts", "read_store", "summarize", "temp_files",
]
