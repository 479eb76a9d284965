"""The HTML report of one simulated seed: a self-contained page, drawn from a ``Trace``.

At the top: the seed, PASSED or FAILED, each oracle violation (as ``pyworkflow simulate`` prints
it) and the command that reproduces the seed. Then a timeline on virtual time, one lane per
simulated worker and one each for the script, the broker, the timer service and sweeper, the
scheduler (when schedules were served) and storage, with every delivery, commit, timer and fault
as a mark (plotly: hover or click a mark for its details; a switch spreads the marks out in the
order they happened, since many happen at one virtual instant). Below it every run's event log,
the runs the violations name first.

The page needs no network: plotly.js, the CSS and the script are inlined. plotly is the
``report`` extra (``pip install 'pyworkflow-engine[report]'``); this module imports it only when
it draws, so ``require_plotly`` can say what is missing in one line. Nothing here runs a
simulation or reads the wall clock.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pyworkflow.model.duration import format_duration
from pyworkflow.model.events import Event
from pyworkflow.model.schemas import WorkflowRun
from pyworkflow_testing import trace as t
from pyworkflow_testing.trace import Mark

MISSING = "the HTML report needs plotly: pip install 'pyworkflow-engine[report]'"

# Above this many marks the timeline keeps every fault, error and scripted action and an even
# sample of the rest (the page says so): a browser stays responsive, the file stays bounded.
MAX_MARKS = 50_000
# Events of all runs embedded in the page (the logs are drawn 500 rows at a time, on demand).
MAX_EVENTS = 100_000
# Up to this many marks the timeline is drawn as SVG (crisp, works without WebGL); above, WebGL.
SVG_MARKS = 3_000
MAX_DATA_CHARS = 300  # of one event's data in the log table

# (legend name, colour, marker symbol, size) of each kind of mark, in drawing order: faults last,
# so they are drawn on top.
_ACTIVATION = "activation delivered"
_STEP_MESSAGE = "step message delivered"
_STYLES: dict[str, tuple[str, str, int]] = {
    _ACTIVATION: ("#1f77b4", "circle", 8),
    _STEP_MESSAGE: ("#17becf", "diamond", 8),
    t.STEP_BODY: ("#7fb8da", "circle-open", 7),
    t.COMMIT: ("#2ca02c", "square", 7),
    t.CREATED: ("#1b7837", "star-square", 9),
    t.REFUSED: ("#bcbd22", "square-open", 8),
    t.TIMER: ("#9467bd", "triangle-up", 9),
    t.RECOVERED: ("#8c564b", "triangle-down", 9),
    t.SCHEDULE: ("#e377c2", "hexagon", 9),
    t.START: ("#444444", "circle", 9),
    t.HOOK: ("#444444", "star", 11),
    t.CANCEL: ("#444444", "x", 10),
    t.REDELIVERY: ("#999999", "circle-open", 8),
    t.OUT_OF_ORDER: ("#f2d27a", "hourglass", 7),
    t.ERROR: ("#d62728", "star", 15),
    t.DROP: ("#ff7f0e", "triangle-down", 13),
    t.DUPLICATE: ("#c51b7d", "cross", 12),
    t.REORDER: ("#e6ab02", "hourglass", 11),
    t.STORAGE_ERROR: ("#a50026", "square-x", 13),
    t.RESTART: ("#000000", "bowtie", 14),
    t.CRASH: ("#e41a1c", "x", 15),
}
_ALWAYS_KEPT = frozenset({*t.FAULTS, t.ERROR, t.START, t.HOOK, t.CANCEL})


class ReportUnavailable(RuntimeError):
    """The ``report`` extra (plotly) is not installed."""


def require_plotly() -> None:
    """Raise ``ReportUnavailable`` (one line naming the extra) when plotly cannot be imported."""
    try:
        import plotly.graph_objects  # noqa: F401
    except ImportError:
        raise ReportUnavailable(MISSING) from None


@dataclass
class RunLog:
    """One stored run and its log, named the way the oracles name it (``run 0 (run_…)``)."""

    name: str
    record: WorkflowRun
    events: list[Event]


@dataclass
class Report:
    """Everything one page shows."""

    title: str  # what was simulated: "module:workflow", or the workflows the script started
    seed: int
    violations: list[str]
    reproduce: str
    faults: str
    workers: int
    dispatch_steps: bool
    epoch: datetime  # where virtual time began
    elapsed: float  # virtual seconds simulated
    marks: list[Mark]
    runs: list[RunLog]
    fired: list[tuple[int, str, str]] = field(default_factory=list)  # faults drawn
    notes: list[str] = field(default_factory=list)  # warnings shown under the verdict

    @property
    def passed(self) -> bool:
        return not self.violations


def violation_lines(violations: list[str]) -> list[str]:
    """Each distinct violation as ``pyworkflow simulate`` prints it (``[N times]`` when it
    repeats), every one of them."""
    counted = Counter(violations)
    return [
        (f"[{times} times] " if times > 1 else "") + violation
        for violation, times in counted.items()
    ]


def failing_run_ids(report: Report) -> list[str]:
    """The runs the violations name (by id, or as ``run N``), in the order of ``report.runs``."""
    text = "\n".join(report.violations)
    indexes = {int(n) for n in re.findall(r"(?:^|\n|- )run (\d+)\b", text)}
    named = []
    for log in report.runs:
        run_id = log.record.run_id
        index = re.fullmatch(r"run (\d+) \(.*\)", log.name)
        if run_id in text or (index is not None and int(index[1]) in indexes):
            named.append(run_id)
    return named


def write(path: str | os.PathLike[str], report: Report) -> Path:
    """Render ``report`` and write it to ``path`` (its directory is created); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(report), encoding="utf-8")
    return target


# -- the page --------------------------------------------------------------------------------


def render(report: Report) -> str:
    """The whole page, as one string."""
    require_plotly()
    failing = failing_run_ids(report)
    marks, sampled = _kept_marks(report.marks)
    lanes = _lanes(report, marks)
    figure = _figure(report, marks, lanes)
    data = {
        "seed": report.seed,
        "epochMs": report.epoch.timestamp() * 1000,
        "lanes": lanes,
        "marks": [_mark_row(mark, lanes) for mark in marks],
        "runs": _runs(report, failing),
        "webgl": len(marks) > SVG_MARKS,
    }
    notes = list(report.notes)
    if sampled:
        notes.append(
            f"The timeline shows {len(marks):,} of {len(report.marks):,} marks: every fault,"
            " error and scripted action, and an even sample of the rest."
        )
    return _PAGE.format(
        title=html.escape(f"seed {report.seed}: {'PASSED' if report.passed else 'FAILED'}"),
        css=_CSS,
        header=_header(report, notes, failing),
        plotlyjs=_plotly_js(),
        figure=figure.replace("<", "\\u003c"),
        data=_json_script(data),
        script=_SCRIPT,
    )


def _json_script(value: Any) -> str:
    """JSON safe inside a <script> element: no ``<`` (so no ``</script>``, no ``<!--``)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c")


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _kept_marks(marks: list[Mark]) -> tuple[list[Mark], bool]:
    if len(marks) <= MAX_MARKS:
        return marks, False
    always = [m for m in marks if m.kind in _ALWAYS_KEPT]
    rest = [m for m in marks if m.kind not in _ALWAYS_KEPT]
    room = max(MAX_MARKS - len(always), 0)
    step = max(len(rest) / room, 1.0) if room else float("inf")
    sample = [rest[int(i * step)] for i in range(min(room, len(rest)))] if room else []
    kept = sorted(always + sample, key=lambda m: m.order)
    return kept, True


def _lanes(report: Report, marks: list[Mark]) -> list[str]:
    used = {mark.lane for mark in marks}
    lanes = [t.SCRIPT, *(t.worker_lane(i) for i in range(report.workers)), t.BROKER, t.TIMERS]
    if t.SCHEDULER in used:
        lanes.append(t.SCHEDULER)
    lanes.append(t.STORAGE)
    lanes += sorted(used - set(lanes))  # anything else (never expected): shown, not lost
    return lanes


def _group(mark: Mark) -> str:
    if mark.kind == t.DELIVERY:
        return _STEP_MESSAGE if mark.details.get("step") is not None else _ACTIVATION
    return mark.kind


def _stacked(marks: list[Mark], lane_of: dict[str, int]) -> list[float]:
    """Each mark's y on the virtual-time view: its lane, with marks of one lane at one virtual
    instant spread across the lane's height, first on top (so many marks at once show as a
    column, not as one dot)."""
    ys = [0.0] * len(marks)
    groups: dict[tuple[str, float], list[int]] = {}
    for i, mark in enumerate(marks):
        groups.setdefault((mark.lane, mark.at), []).append(i)
    for (lane, _), members in groups.items():
        base = -float(lane_of[lane])
        if len(members) == 1:
            ys[members[0]] = base
            continue
        last = len(members) - 1
        for k, i in enumerate(members):
            ys[i] = round(base + 0.3 - 0.6 * k / last, 4)
    return ys


def _figure(report: Report, marks: list[Mark], lanes: list[str]) -> str:
    import plotly.graph_objects as go
    import plotly.io

    lane_of = {lane: i for i, lane in enumerate(lanes)}
    epoch_ms = report.epoch.timestamp() * 1000
    ys = _stacked(marks, lane_of)
    webgl = len(marks) > SVG_MARKS
    scatter = go.Scattergl if webgl else go.Scatter
    by_group: dict[str, list[int]] = {}
    for i, mark in enumerate(marks):
        by_group.setdefault(_group(mark), []).append(i)
    traces: list[Any] = []
    # Deliveries as spans, from when the worker took the message to when it was done with it.
    span_x: list[float | None] = []
    span_y: list[float | None] = []
    for i, mark in enumerate(marks):
        if mark.kind == t.DELIVERY and mark.until is not None and mark.until > mark.at:
            span_x += [_ms(epoch_ms, mark.at), _ms(epoch_ms, mark.until), None]
            span_y += [ys[i], ys[i], None]
    traces.append(
        scatter(
            x=span_x,
            y=span_y,
            mode="lines",
            name="delivery spans",
            line={"color": "rgba(31,119,180,0.35)", "width": 4},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    for group in sorted(by_group, key=lambda g: list(_STYLES).index(g) if g in _STYLES else -1):
        members = by_group[group]
        colour, symbol, size = _STYLES.get(group, ("#777777", "circle", 8))
        traces.append(
            scatter(
                x=[_ms(epoch_ms, marks[i].at) for i in members],
                y=[ys[i] for i in members],
                mode="markers",
                name=f"{group} ({len(members)})",
                legendgroup=group,
                meta=group,
                marker={
                    "color": colour,
                    "symbol": symbol,
                    "size": size,
                    "line": {"width": 1, "color": colour},
                },
                text=[marks[i].summary for i in members],
                customdata=members,
                hovertemplate="%{text}<extra>%{meta}</extra>",
            )
        )
    bands = [
        {
            "type": "rect",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": -i - 0.5,
            "y1": -i + 0.5,
            "fillcolor": "rgba(0,0,0,0.035)" if i % 2 else "rgba(0,0,0,0)",
            "line": {"width": 0},
            "layer": "below",
        }
        for i in range(len(lanes))
    ]
    figure = go.Figure(traces)
    figure.update_layout(
        height=160 + 46 * len(lanes),
        margin={"l": 90, "r": 20, "t": 10, "b": 50},
        hovermode="closest",
        dragmode="zoom",
        plot_bgcolor="white",
        shapes=bands,
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0, "font": {"size": 11}},
        xaxis={
            "type": "date",
            "title": {"text": "virtual time"},
            "showgrid": True,
            "gridcolor": "#eeeeee",
            "hoverformat": "%Y-%m-%d %H:%M:%S.%L",
        },
        yaxis={
            "tickvals": [-i for i in range(len(lanes))],
            "ticktext": lanes,
            "range": [-len(lanes) + 0.5, 0.5],
            "zeroline": False,
            "showgrid": False,
            "fixedrange": True,
        },
    )
    return str(plotly.io.to_json(figure, validate=True, pretty=False))


def _ms(epoch_ms: float, seconds: float) -> float:
    return round(epoch_ms + seconds * 1000, 3)


def _mark_row(mark: Mark, lanes: list[str]) -> list[Any]:
    """``[order, at, lane index, until, until_order, run id, kind, details]``; the summary is the
    point's text in the figure."""
    return [
        mark.order,
        mark.at,
        lanes.index(mark.lane),
        mark.until,
        mark.until_order,
        mark.run_id,
        mark.kind,
        _plain(mark.details),
    ]


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it (anything else as its ``str``)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _event_data(event: Event) -> str:
    data = {k: v for k, v in event.data.items() if k != "command_id"}
    if not data:
        return ""
    text = ", ".join(f"{k}={_short(v)}" for k, v in data.items())
    return text if len(text) <= MAX_DATA_CHARS else text[: MAX_DATA_CHARS - 1] + "…"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(_plain(value), ensure_ascii=False)
    return text if len(text) <= 120 else text[:119] + "…"


def _runs(report: Report, failing: list[str]) -> list[dict[str, Any]]:
    epoch = report.epoch.timestamp()
    ordered = sorted(report.runs, key=lambda log: log.record.run_id not in failing)
    budget = MAX_EVENTS
    runs = []
    for log in ordered:
        record = log.record
        events = log.events[: max(budget, 0)]
        budget -= len(events)
        runs.append(
            {
                "name": log.name,
                "id": record.run_id,
                "workflow": record.workflow_name,
                "status": record.status.value,
                "error": record.error,
                "failing": record.run_id in failing,
                "total": len(log.events),
                "events": [
                    [
                        event.sequence,
                        round(event.epoch_seconds() - epoch, 6),
                        event.type.value,
                        event.data.get("command_id") or "",
                        _event_data(event),
                    ]
                    for event in events
                ],
            }
        )
    return runs


def _header(report: Report, notes: list[str], failing: list[str]) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    parts = [
        f'<h1>seed {report.seed} <span class="verdict {verdict.lower()}">{verdict}</span></h1>',
        f'<p class="meta">{html.escape(report.title)} &middot; faults {html.escape(report.faults)}'
        f" &middot; {report.workers} worker{'s' if report.workers != 1 else ''} &middot; steps"
        f" {'dispatched to workers' if report.dispatch_steps else 'run inline'} &middot;"
        f" {_duration(report.elapsed)} of virtual time &middot; {len(report.runs)} run"
        f"{'s' if len(report.runs) != 1 else ''}, {sum(len(r.events) for r in report.runs):,}"
        f" events &middot; {len(report.marks):,} marks</p>",
    ]
    for note in notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    if report.violations:
        items = "".join(
            f'<li><pre class="violation">{html.escape(line)}</pre></li>'
            for line in violation_lines(report.violations)
        )
        parts.append(f'<h2>Violations</h2><ul id="violations">{items}</ul>')
    else:
        parts.append('<p id="violations" class="ok">Every oracle passed.</p>')
    if failing:
        named = ", ".join(f"<code>{html.escape(run_id)}</code>" for run_id in failing)
        parts.append(
            f'<p class="meta">Runs the violations name: <span id="failing">{named}</span></p>'
        )
    parts.append(
        '<h2>Reproduce</h2><div class="reproduce"><pre id="reproduce">'
        f"{html.escape(report.reproduce)}</pre>"
        '<button type="button" id="copy">copy</button></div>'
    )
    struck = Counter(kind for _, kind, _ in report.fired)
    if struck:
        listed = ", ".join(f"{kind} &times;{n}" for kind, n in sorted(struck.items()))
        parts.append(f'<p class="meta">Faults drawn by the seed: {listed}.</p>')
    return "\n".join(parts)


def _duration(seconds: float) -> str:
    return format_duration(seconds, digits=6)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
{header}
</header>
<main>
<section>
<h2>Timeline</h2>
<p class="help">One lane per simulated worker, and lanes for the script (what the test did), the
broker, the timer service and sweeper, and storage. Every mark is something that happened there;
hover for a summary, click for the details (and the run's log). Many things happen at one virtual
instant (virtual time moves only when every worker is idle): at one instant, a lane's marks are
stacked top to bottom in the order they happened. <b>order</b> spreads them out instead, one
position per mark. Drag to zoom, double-click to zoom out; click a legend entry to hide a kind.</p>
<div class="controls">
<span>x axis:</span>
<button type="button" id="mode-time" class="on">virtual time</button>
<button type="button" id="mode-order">order</button>
<label>highlight run <select id="highlight"><option value="">all runs</option></select></label>
</div>
<div class="timeline-row">
<div id="timeline"></div>
<aside id="details"><p class="help">Click a mark to see its details here.</p></aside>
</div>
</section>
<section>
<h2>Event logs</h2>
<p class="help">Each run's log as storage holds it at the end of the seed; the runs the violations
name first, opened (with none named, up to three runs open). Time is virtual, from the start of
the simulation.</p>
<div class="controls"><label>filter <input id="filter" type="search" size="40"
placeholder="event type, command id or data"></label></div>
<div id="runs"></div>
</section>
</main>
<script>window.PlotlyConfig = {{MathJaxConfig: "local"}};</script>
<script>{plotlyjs}</script>
<script type="application/json" id="figure-data">{figure}</script>
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; }
header, main { padding: 0 24px; }
h1 { margin: 16px 0 4px; font-size: 22px; }
h2 { font-size: 16px; margin: 18px 0 6px; }
.verdict { padding: 2px 10px; border-radius: 4px; color: white; font-size: 16px; }
.verdict.failed { background: #c62828; }
.verdict.passed { background: #2e7d32; }
.meta, .help { color: #555; margin: 4px 0; }
.help { font-size: 13px; max-width: 1100px; }
.note { background: #fff4e5; border-left: 4px solid #ef6c00; padding: 6px 10px; }
.ok { color: #2e7d32; font-weight: 600; }
ul#violations { padding-left: 18px; margin: 4px 0; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word;
      font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre.violation { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 10px;
                margin: 4px 0; }
.reproduce { display: flex; gap: 8px; align-items: flex-start; }
.reproduce pre { background: #f3f3f3; padding: 6px 10px; flex: 1; }
button { font: inherit; padding: 2px 10px; cursor: pointer; }
.controls { display: flex; gap: 8px; align-items: center; margin: 6px 0; flex-wrap: wrap; }
.controls button.on { background: #1f77b4; color: white; border: 1px solid #1f77b4; }
.timeline-row { display: flex; gap: 12px; align-items: stretch; }
#timeline { flex: 1; min-width: 0; }
#details { width: 340px; flex: none; border-left: 1px solid #ddd; padding-left: 12px;
           overflow: auto; max-height: 900px; font-size: 13px; }
#details dt { font-weight: 600; margin-top: 4px; }
#details dd { margin: 0 0 0 8px; word-break: break-word; }
@media (max-width: 1000px) { .timeline-row { flex-direction: column; }
  #details { width: auto; border-left: none; } }
details.run { border: 1px solid #ddd; border-radius: 4px; margin: 6px 0; }
details.run.failing { border: 2px solid #c62828; }
details.run > summary { padding: 6px 10px; cursor: pointer; background: #fafafa; }
details.run.failing > summary { background: #fdecea; }
table.log { border-collapse: collapse; width: 100%; font-size: 12.5px; }
table.log th, table.log td { text-align: left; padding: 2px 8px; border-top: 1px solid #eee;
  vertical-align: top; }
table.log td.data { font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  word-break: break-word; }
table.log tr.failed td { background: #fdecea; }
table.log tr.picked td { background: #fff3c4; }
.more { margin: 6px 10px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var figure = JSON.parse(document.getElementById("figure-data").textContent);
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var gd = document.getElementById("timeline");
  var marks = data.marks;  // [order, at, lane, until, untilOrder, run, kind, details]
  var PAGE = 500;

  function pad(n, w) { var s = String(n); while (s.length < w) s = "0" + s; return s; }
  function since(seconds) {
    var whole = Math.floor(seconds), frac = seconds - whole;
    var d = Math.floor(whole / 86400), h = Math.floor(whole % 86400 / 3600);
    var m = Math.floor(whole % 3600 / 60), s = whole % 60 + frac;
    var out = [];
    if (d) out.push(d + "d");
    if (h) out.push(h + "h");
    if (m) out.push(m + "m");
    if (s || !out.length) out.push((Math.round(s * 1e6) / 1e6) + "s");
    return "+" + out.join(" ");
  }
  function iso(seconds) {
    var ms = data.epochMs + seconds * 1000, date = new Date(Math.floor(ms));
    var micros = Math.round((seconds * 1e6) % 1e6 + 1e6) % 1e6;
    return date.toISOString().slice(0, 19) + "." + pad(micros, 6) + "Z";
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- the timeline ------------------------------------------------------------------------
  var webgl = true;
  try {
    var canvas = document.createElement("canvas");
    webgl = !!(canvas.getContext("webgl") || canvas.getContext("experimental-webgl"));
  } catch (e) { webgl = false; }
  if (!webgl) {
    figure.data.forEach(function (trace) {
      if (trace.type === "scattergl") trace.type = "scatter";
    });
    if (data.webgl) {
      var warn = el("p", {"class": "note"},
        "This browser has no WebGL: the timeline is drawn with SVG, which is slower.");
      gd.parentNode.insertBefore(warn, gd);
    }
  }
  var timeView = figure.data.map(function (trace) { return {x: trace.x, y: trace.y}; });
  var orderView = figure.data.map(function (trace) {
    if (!trace.customdata) {  // the delivery spans
      var xs = [], ys = [];
      marks.forEach(function (row) {
        if (row[6] === "delivery" && row[4] !== null && row[4] > row[0]) {
          xs.push(row[0], row[4], null); ys.push(-row[2], -row[2], null);
        }
      });
      return {x: xs, y: ys};
    }
    return {
      x: trace.customdata.map(function (i) { return marks[i][0]; }),
      y: trace.customdata.map(function (i) { return -marks[i][2]; })
    };
  });
  var config = {responsive: true, displaylogo: false, scrollZoom: true,
                modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  Plotly.newPlot(gd, figure.data, figure.layout, config).then(function () {
    gd.setAttribute("data-ready", "true");
  });

  function setMode(mode) {
    var view = mode === "order" ? orderView : timeView;
    var layout = mode === "order"
      ? {"xaxis.type": "linear", "xaxis.title.text": "order of happening (the n-th mark)",
         "xaxis.autorange": true}
      : {"xaxis.type": "date", "xaxis.title.text": "virtual time", "xaxis.autorange": true};
    Plotly.update(gd, {x: view.map(function (v) { return v.x; }),
                       y: view.map(function (v) { return v.y; })}, layout);
    document.getElementById("mode-time").className = mode === "order" ? "" : "on";
    document.getElementById("mode-order").className = mode === "order" ? "on" : "";
    gd.setAttribute("data-mode", mode);
  }
  document.getElementById("mode-time").onclick = function () { setMode("time"); };
  document.getElementById("mode-order").onclick = function () { setMode("order"); };

  var highlight = document.getElementById("highlight");
  data.runs.forEach(function (run) {
    var label = run.name + (run.failing ? " (named by a violation)" : "");
    highlight.appendChild(el("option", {value: run.id}, label));
  });
  highlight.onchange = function () {
    var runId = highlight.value;
    var selected = figure.data.map(function (trace) {
      if (!runId || !trace.customdata) return null;
      var picked = [];
      trace.customdata.forEach(function (i, j) { if (marks[i][5] === runId) picked.push(j); });
      return picked;
    });
    Plotly.restyle(gd, {selectedpoints: selected,
                        "unselected.marker.opacity": 0.12, "selected.marker.opacity": 1});
  };

  var details = document.getElementById("details");
  function showMark(curve, point) {
    var trace = gd.data[curve];
    if (!trace.customdata) return;
    var index = trace.customdata[point], row = marks[index];
    details.innerHTML = "";
    details.appendChild(el("h3", {}, trace.text[point]));
    var list = el("dl");
    function item(key, value) {
      list.appendChild(el("dt", {}, key));
      var dd = el("dd");
      if (Array.isArray(value)) {
        value.forEach(function (v) { dd.appendChild(el("div", {}, String(v))); });
      } else if (value !== null && typeof value === "object") {
        dd.textContent = JSON.stringify(value);
      } else {
        dd.textContent = String(value);
      }
      list.appendChild(dd);
    }
    item("kind", row[6]);
    item("lane", data.lanes[row[2]]);
    item("virtual time", since(row[1]) + "  (" + iso(row[1]) + ")");
    if (row[3] !== null && row[3] !== row[1]) item("until", since(row[3]));
    item("order", row[0] + (row[4] !== null ? " to " + row[4] : ""));
    if (row[5]) item("run", row[5]);
    for (var key in row[7]) item(key, row[7][key]);
    details.appendChild(list);
    details.setAttribute("data-mark", String(index));
    if (row[5] && runsById[row[5]]) {
      var sequences = (row[7].events || []).map(function (e) { return parseInt(e, 10); })
        .filter(function (n) { return !isNaN(n); });
      var link = el("button", {type: "button"}, "show " + row[5] + "'s log");
      link.onclick = function () { openRun(row[5], sequences); };
      details.appendChild(link);
    }
  }
  gd.on("plotly_click", function (event) {
    if (event && event.points && event.points.length) {
      showMark(event.points[0].curveNumber, event.points[0].pointNumber);
    }
  });

  // -- the event logs ----------------------------------------------------------------------
  var runsBox = document.getElementById("runs");
  var filter = document.getElementById("filter");
  var runsById = {};
  function matches(event, needle) {
    if (!needle) return true;
    return (event[2] + " " + event[3] + " " + event[4]).toLowerCase().indexOf(needle) >= 0;
  }
  function drawRows(run, picked) {
    var needle = filter.value.trim().toLowerCase();
    var body = run.body;
    body.innerHTML = "";
    run.shown = 0;
    run.rows = run.events.filter(function (e) { return matches(e, needle); });
    run.picked = picked || run.picked || [];
    moreRows(run);
  }
  function moreRows(run) {
    var end = Math.min(run.rows.length, run.shown + PAGE);
    var fragment = document.createDocumentFragment();
    for (var i = run.shown; i < end; i++) {
      var e = run.rows[i];
      var cls = [];
      if (FAILED_EVENTS.indexOf(e[2]) >= 0) cls.push("failed");
      if (run.picked.indexOf(e[0]) >= 0) cls.push("picked");
      var tr = el("tr", {"class": cls.join(" "), "data-seq": String(e[0])});
      tr.appendChild(el("td", {}, String(e[0])));
      tr.appendChild(el("td", {title: iso(e[1])}, since(e[1])));
      tr.appendChild(el("td", {}, e[2]));
      tr.appendChild(el("td", {}, e[3]));
      tr.appendChild(el("td", {"class": "data"}, e[4]));
      fragment.appendChild(tr);
    }
    run.body.appendChild(fragment);
    run.shown = end;
    var left = run.rows.length - run.shown;
    run.more.style.display = left > 0 ? "" : "none";
    run.more.textContent = "show " + Math.min(left, PAGE) + " more (" + left + " left)";
  }
  var FAILED_EVENTS = ["workflow.failed", "step.failed", "child_workflow.failed"];
  // Open: the runs the violations name; with none named, every run of a small simulation.
  var anyFailing = data.runs.some(function (run) { return run.failing; });
  data.runs.forEach(function (run) {
    var box = el("details",
                 {"class": "run" + (run.failing ? " failing" : ""), id: "run-" + run.id});
    var summary = el("summary", {}, run.name + " \u2014 " + run.workflow + ", " + run.status +
      ", " + run.total + " events" + (run.failing ? " \u2014 named by a violation" : ""));
    box.appendChild(summary);
    if (run.error) box.appendChild(el("pre", {"class": "violation"}, run.error));
    if (run.total > run.events.length) {
      box.appendChild(el("p", {"class": "note"}, "Only the first " + run.events.length +
        " events of this run are in the page."));
    }
    var table = el("table", {"class": "log"});
    var head = el("tr");
    ["seq", "virtual time", "type", "command id", "data"].forEach(function (h) {
      head.appendChild(el("th", {}, h));
    });
    var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
    run.body = el("tbody"); table.appendChild(run.body);
    box.appendChild(table);
    run.more = el("button", {type: "button", "class": "more"});
    run.more.onclick = function () { moreRows(run); };
    box.appendChild(run.more);
    run.drawn = false;
    box.addEventListener("toggle", function () {
      if (box.open && !run.drawn) { run.drawn = true; drawRows(run); }
    });
    run.box = box;
    runsById[run.id] = run;
    runsBox.appendChild(box);
    if (run.failing || (!anyFailing && data.runs.length <= 3)) box.open = true;
  });
  filter.addEventListener("input", function () {
    data.runs.forEach(function (run) { if (run.drawn) drawRows(run); });
  });
  function openRun(runId, sequences) {
    var run = runsById[runId];
    run.drawn = true;
    drawRows(run, sequences);
    run.box.open = true;
    var first = null;
    if (sequences.length) {
      var selector = 'tr[data-seq="' + sequences[0] + '"]';
      first = run.body.querySelector(selector);
      while (!first && run.shown < run.rows.length) {  // draw on down to the first picked event
        moreRows(run);
        first = run.body.querySelector(selector);
      }
    }
    (first || run.box).scrollIntoView({block: "center"});
  }

  document.getElementById("copy").onclick = function () {
    var text = document.getElementById("reproduce").textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(function () {});
    var range = document.createRange();
    range.selectNodeContents(document.getElementById("reproduce"));
    var selection = window.getSelection();
    selection.removeAllRanges(); selection.addRange(range);
  };
  window.pyworkflowReport = {data: data, setMode: setMode, showMark: showMark, openRun: openRun};
})();
"""


__all__ = [
    "MISSING",
    "Report",
    "ReportUnavailable",
    "RunLog",
    "failing_run_ids",
    "render",
    "require_plotly",
    "violation_lines",
    "write",
]
