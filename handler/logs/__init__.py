"""Log analyzer behind `python -m handler logs analyze`: the performance guide's grep recipes
(false interruptions, slow LLM, `_SegmentSynchronizerImpl`, volume) plus errors, retries, faults
per stage and TTFA percentiles, in one streaming pass over any number of files (or "-" for stdin).

Line formats, auto-detected per line (ANSI colour codes and a leading "\\r" are stripped first,
because livekit's dev formatter colours the level):

* project text:  ``<ISO ts> <LEVEL> <logger> <message> key=value ...``
  e.g. ``2026-11-23T21:00:00.123Z INFO handler.metrics turn n=3 ttfa_ms=1040 ... session=sim-1``
* JSON object per line: ts in "ts"/"timestamp"/"time"/"asctime", level in "level"/"levelname",
  message in "msg"/"message", fields at top level (this project's and livekit's production format).
* anything else: only grep-matched; a leading ``YYYY-MM-DD[T ]HH:MM:SS[.,fff][Z|+hh:mm]`` gives it a
  time (naive times are taken as UTC), and a level is recognised among its first tokens.

A "turn" line is a project line whose message is ``turn``; ``session summary`` lines are counted
but their totals are not added (the turn lines already carry the same data), except the per-stage
faults (``stt_lost=2``) a summary counts beyond its own session's turn lines: the faults after
the last turn (a recognizer that never heard a word leaves no turn line at all). Sessions are
told apart by their ``job``/``session``/``job_id`` field.

Rates are per minute of log time: count / max(last ts - first ts, 1 minute) over every
timestamped line of all inputs (None when no line has a time). A false interruption shows up both
as livekit's DEBUG line and as this project's turn line with false_interruptions=N, and the two
cannot always be paired, so both are counted separately; the rate uses the turn lines when any
turn line carries the field, otherwise the livekit lines.

Memory is bounded regardless of input size: lines are read one at a time (over-long lines are cut
at ``MAX_LINE`` bytes), counters are scalars, the volume table is one int per minute of log time,
latency percentiles come from exact per-millisecond counts and plot points from fixed-size
reservoirs.


    parse.py        inputs read in bounded pieces; each line's time, level, message and fields
    accumulate.py   the bounded report: counters, volume, latencies, plot samples; `analyze()`
    render.py       the report as text
    plot.py         the timeline PNG (matplotlib)

Turn lines are read back into `handler.pipeline.turns.TurnRecord`s through the same field list the
metrics plugin writes them with (`handler.pipeline.turns.LINE_FIELDS`).
"""

from handler.logs.accumulate import LatencyCounts, Report, analyze
from handler.logs.parse import LogInputError
from handler.logs.plot import plot
from handler.logs.render import render_text

__all__ = ["LatencyCounts", "LogInputError", "Report", "analyze", "plot", "render_text"]
