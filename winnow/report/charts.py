"""The report's charts as Plotly figures (rendered in the page by the plotly.js bundled inline)."""

from __future__ import annotations

import plotly.graph_objects as go

from winnow.report.collect import FilterFacts, Histogram, JobFacts

KEPT_COLOUR = "#3b7dd8"
DROPPED_COLOUR = "#d8563b"
LAYOUT = dict(margin=dict(l=60, r=20, t=40, b=40), height=320, template="plotly_white",
              font=dict(family="system-ui, sans-serif", size=12))


def funnel(facts: JobFacts, primary: FilterFacts | None) -> go.Figure:
    labels = ["pool"] + [t.stage for t in facts.totals]
    values = [facts.manifest.sample_count] + [t.kept for t in facts.totals]
    if primary is not None:
        labels.append(f"filter ({primary.name})")
        values.append(primary.kept)
    figure = go.Figure(go.Funnel(y=labels, x=values, textinfo="value+percent initial", marker_color=KEPT_COLOUR))
    return figure.update_layout(title="samples kept after each stage", **LAYOUT)


def reasons(facts: JobFacts) -> go.Figure:
    """Samples not kept, per stage and reason."""
    outcomes = sorted((o for o in facts.outcomes.values() if o.stage != "kept"), key=lambda o: o.count)
    figure = go.Figure(go.Bar(x=[o.count for o in outcomes], y=[f"{o.stage}: {o.reason}" for o in outcomes],
                              orientation="h", marker_color=DROPPED_COLOUR))
    layout = {**LAYOUT, "height": max(240, 28 * len(outcomes) + 80), "margin": dict(l=240, r=20, t=40, b=40)}
    return figure.update_layout(title="samples not kept, by stage and reason", **layout)


def criteria(facts: FilterFacts) -> go.Figure:
    names = list(facts.removed_by)
    figure = go.Figure(go.Bar(x=names, y=[facts.removed_by[n] for n in names], marker_color=DROPPED_COLOUR,
                              hovertext=[facts.rules.get(n, "") for n in names]))
    title = "candidates removed by each criterion (in order)" if facts.rules else "candidates removed, by reason"
    return figure.update_layout(title=f"{facts.name}: {title}", **LAYOUT)


def histogram(h: Histogram) -> go.Figure:
    centres = [(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:])]
    width = h.edges[1] - h.edges[0]
    passed = f"kept by {h.stage}" if h.stage.startswith("filter") else f"passed {h.stage or 'its stage'}"
    figure = go.Figure([
        go.Bar(x=centres, y=h.kept, width=width, name=passed, marker_color=KEPT_COLOUR),
        go.Bar(x=centres, y=h.dropped, width=width, name=f"dropped by {h.stage}" if h.stage else "dropped",
               marker_color=DROPPED_COLOUR),
    ])
    figure.update_layout(barmode="stack", title=f"{h.title} ({h.column})", xaxis_title=h.column,
                         yaxis_title="samples", legend=dict(orientation="h", y=-0.25), **LAYOUT)
    if h.threshold is not None:
        label = f"threshold {h.threshold:.4g}"
        if h.share_kept is not None:
            label += f": {h.share_kept:.0%} of candidates at or above"
        figure.add_vline(x=h.threshold, line_dash="dash", line_color="#222", annotation_text=label,
                         annotation_position="top")
    return figure


def download_reasons(facts: JobFacts) -> go.Figure:
    items = facts.download_reasons.most_common()
    figure = go.Figure(go.Bar(x=[r for r, _ in items], y=[n for _, n in items], marker_color=DROPPED_COLOUR))
    return figure.update_layout(title="download failures by reason", **LAYOUT)


def domains(facts: JobFacts) -> go.Figure:
    rows = facts.domains
    reasons = sorted({r for d in rows for r in d["reasons"]})
    figure = go.Figure([go.Bar(name=r, y=[d["domain"] for d in rows], x=[d["reasons"].get(r, 0) for d in rows],
                               orientation="h") for r in reasons])
    layout = {**LAYOUT, "height": max(240, 26 * len(rows) + 100), "margin": dict(l=200, r=20, t=40, b=40)}
    return figure.update_layout(barmode="stack", title="download failures by domain (top domains)",
                                yaxis=dict(autorange="reversed"), **layout)


def timings(facts: JobFacts) -> go.Figure:
    rows = [t for t in facts.shard_timings if t["samples_per_second"]]
    figure = go.Figure(go.Bar(x=[t["stage"] for t in rows], y=[t["samples_per_second"] for t in rows],
                              marker_color=KEPT_COLOUR,
                              hovertext=[f"{t['shards']} shards, {t['seconds']} s of shard time" for t in rows]))
    return figure.update_layout(title="samples per second of shard time, per stage", **LAYOUT)
