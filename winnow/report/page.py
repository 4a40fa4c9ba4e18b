"""The report page: one self-contained HTML file (plotly.js, thumbnails and data inline) that a
person opens offline, with a uid lookup that runs in the page."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping

import plotly.io as pio
from plotly.offline import get_plotlyjs

from winnow.report import charts
from winnow.report.collect import FILTER_STAGE, KEPT, UID_MIX, JobFacts, Outcome

SCORE_LABELS = ("toxicity_score", "nsfw_score", "eval_similarity", "duplicate_similarity")


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def deciding_value(outcome: Outcome, row: Mapping, rules: Mapping[str, str]) -> str:
    """What decided a sample's fate, in a few words, from its ledger row."""
    if row.get("error_message"):
        return str(row["error_message"])
    text = row.get("text") or ""
    w, h = row.get("original_width"), row.get("original_height")
    if outcome.stage == FILTER_STAGE:
        rule = rules.get(outcome.reason, "")
        value = {"too_few_words": f"{len(text.split())} words", "too_few_characters": f"{len(text)} characters",
                 "image_too_small": f"{w}×{h}", "aspect_ratio_too_large": f"{w}×{h}"}.get(outcome.reason)
        clip = next((f"{k} {row[k]:.4f}" for k in row if k.startswith("clip_") and isinstance(row[k], float)), None)
        if value is None and "clip" in outcome.reason:
            value = clip
        return "; ".join(p for p in (value, f"needs {rule}" if rule else outcome.reason) if p)
    scores = [f"{k} {row[k]:.3f}" for k in SCORE_LABELS if isinstance(row.get(k), float)]
    scores += [f"{k} {row[k]:.3f}" for k in row if k.startswith("clip_") and isinstance(row[k], float)]
    return ", ".join(scores) or (f"{w}×{h}" if w else "")


def _grid(outcome: Outcome, thumbs: Mapping[str, str], rules: Mapping[str, str]) -> str:
    cells = []
    for row in outcome.rows:
        value = deciding_value(outcome, row, rules)
        tip = f"uid {row['uid']}\n{row.get('text') or ''}\n{row.get('url') or ''}\n{value}"
        image = (f'<img src="{thumbs[row["uid"]]}" alt="{_e(row.get("text"))}">'
                 if row["uid"] in thumbs else '<div class="noimg">no image</div>')
        cells.append(f'<figure class="thumb" title="{_e(tip)}" data-uid="{_e(row["uid"])}">{image}'
                     f'<figcaption><span class="cap">{_e(row.get("text"))}</span>'
                     f'<span class="val">{_e(value)}</span></figcaption></figure>')
    shown = f"{len(outcome.rows)} of {outcome.count:,} shown" if outcome.count > len(outcome.rows) else \
        f"all {outcome.count:,}"
    heading = "kept" if (outcome.stage, outcome.reason) == KEPT else f"{outcome.stage}: {outcome.reason}"
    return (f'<section class="reason" data-outcome="{_e(heading)}"><h3>{_e(heading)} '
            f'<small>{shown}</small></h3><div class="grid">{"".join(cells)}</div></section>')


def _funnel_table(facts: JobFacts) -> str:
    rows = [f'<tr data-stage="pool"><td>pool</td><td>{facts.manifest.shard_count}</td>'
            f'<td data-field="in">{facts.manifest.sample_count:,}</td><td data-field="kept">'
            f'{facts.manifest.sample_count:,}</td><td data-field="dropped">0</td><td>-</td></tr>']
    for t in facts.totals:
        reasons = ", ".join(f"{_e(r)}: {n:,}" for r, n in t.reasons.most_common()) or "-"
        rows.append(f'<tr data-stage="{_e(t.stage)}"><td>{_e(t.stage)}</td><td>{t.shards_done}</td>'
                    f'<td data-field="in">{t.samples:,}</td><td data-field="kept">{t.kept:,}</td>'
                    f'<td data-field="dropped">{t.samples - t.kept:,}</td><td>{reasons}</td></tr>')
    for f in facts.filters:
        if f.primary:
            reasons = ", ".join(f"{_e(r)}: {n:,}" for r, n in f.removed_by.items() if n) or "-"
            rows.append(f'<tr data-stage="filter"><td>filter ({_e(f.name)})</td><td>-</td>'
                        f'<td data-field="in">{f.candidates:,}</td><td data-field="kept">{f.kept:,}</td>'
                        f'<td data-field="dropped">{f.candidates - f.kept:,}</td><td>{reasons}</td></tr>')
    return ('<table id="funnel-table"><thead><tr><th>stage</th><th>shards</th><th>in</th><th>kept</th>'
            f'<th>not kept</th><th>by reason</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _criteria_tables(facts: JobFacts) -> str:
    parts = []
    for f in facts.filters:
        rule = (lambda n: f"<td>{_e(f.rules.get(n, ''))}</td>") if f.rules else (lambda n: "")
        rows = "".join(f'<tr data-criterion="{_e(n)}"><td>{_e(n)}</td>{rule(n)}'
                       f'<td data-field="removed">{c:,}</td></tr>' for n, c in f.removed_by.items())
        label = "the job's filter, resharded" if f.primary else "another subset of this job"
        threshold = f", threshold {f.threshold:.6g}" if f.threshold is not None else ""
        parts.append(f'<h3>{_e(f.name)} <small>{label}: kept {f.kept:,} of {f.candidates:,} candidates'
                     f'{threshold}</small></h3><table class="criteria" data-filter="{_e(f.name)}"><thead><tr>'
                     f'<th>{"criterion" if f.rules else "reason"}</th>{"<th>passes when</th>" if f.rules else ""}'
                     f'<th>removed</th></tr></thead>'
                     f'<tbody>{rows}</tbody></table>')
    return "".join(parts) or "<p>No filter has run on this job (winnow filter --save_path JOB/filter/NAME.npy).</p>"


def _domains_table(facts: JobFacts) -> str:
    rows = "".join(f'<tr><td>{_e(d["domain"])}</td><td>{d["samples"]:,}</td><td>{d["failed"]:,}</td>'
                   f'<td>{_e(", ".join(f"{r}: {n}" for r, n in d["reasons"].items()))}</td></tr>'
                   for d in facts.domains)
    return ('<table><thead><tr><th>domain</th><th>samples</th><th>failed</th><th>by reason</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def _measures_table(facts: JobFacts) -> str:
    rows = "".join(f'<tr><td>{_e(t["stage"])}</td><td>{t["shards"]}</td><td>{t["samples"]:,}</td>'
                   f'<td>{t["seconds"]:.1f}</td><td>{_number(t["samples_per_second"])}</td></tr>'
                   for t in facts.shard_timings)
    table = ('<table><thead><tr><th>stage</th><th>shards</th><th>samples</th><th>shard seconds</th>'
             f'<th>samples/s</th></tr></thead><tbody>{rows}</tbody></table>')
    if facts.download_measures:
        rows = "".join(f'<tr><td>{_e(k)}</td><td>{v["count"]:,}</td><td>{v["mean"]:.4g}</td><td>{v["p50"]:.4g}</td>'
                       f'<td>{v["p95"]:.4g}</td><td>{v["max"]:.4g}</td></tr>'
                       for k, v in facts.download_measures.items())
        table += ('<h3>per-sample download sizes and timings</h3><table><thead><tr><th>measure</th><th>samples'
                  f'</th><th>mean</th><th>p50</th><th>p95</th><th>max</th></tr></thead><tbody>{rows}</tbody></table>')
    return table


def render(facts: JobFacts, thumbs: Mapping[str, str]) -> str:
    """The whole page."""
    primary = next((f for f in facts.filters if f.primary), None)
    rules = primary.rules if primary else {}
    figures = {"funnel": charts.funnel(facts, primary), "reasons": charts.reasons(facts)}
    for i, f in enumerate(facts.filters):
        figures[f"criteria-{i}"] = charts.criteria(f)
    for h in facts.histograms:
        figures[f"hist-{h.column}"] = charts.histogram(h)
    if facts.download_reasons:
        figures["downloads"] = charts.download_reasons(facts)
        figures["domains"] = charts.domains(facts)
    figures["timings"] = charts.timings(facts)
    outcomes = sorted(facts.outcomes.values(), key=lambda o: ((o.stage, o.reason) == KEPT, -o.count))
    dropped_grids = "".join(_grid(o, thumbs, rules) for o in outcomes if (o.stage, o.reason) != KEPT)
    kept = facts.outcomes.get(KEPT)
    kept_grid = _grid(kept, thumbs, rules) if kept else "<p>Nothing was kept.</p>"
    sampled = {row["uid"]: {"outcome": f"{o.stage}: {o.reason}", "text": row.get("text"), "url": row.get("url"),
                            "value": deciding_value(o, row, rules), "thumb": thumbs.get(row["uid"])}
               for o in facts.outcomes.values() for row in o.rows}
    data = {"codes": [list(c) for c in facts.outcome_codes], "index": base64.b64encode(facts.uid_index).decode(),
            "sampled": sampled, "figures": {k: json.loads(pio.to_json(f, validate=False)) for k, f in figures.items()},
            "total": facts.total_samples}
    plots = "".join(f'<div class="plot" id="plot-{_e(k)}"></div>' for k in figures
                    if k.startswith("hist-"))
    criteria_plots = "".join(f'<div class="plot" id="plot-criteria-{i}"></div>' for i in range(len(facts.filters)))
    download_plots = ('<div class="plot" id="plot-downloads"></div><div class="plot" id="plot-domains"></div>'
                      if facts.download_reasons else "<p>No download failures.</p>")
    m = facts.manifest
    return _TEMPLATE.format(
        title=_e(f"winnow report: job {m.job_id}"), job_id=_e(m.job_id), job_root=_e(m.job_root),
        samples=f"{m.sample_count:,}", shards=m.shard_count, stages=_e(" → ".join(facts.stages)),
        sampled_shards=len(facts.sampled_shards), funnel_table=_funnel_table(facts),
        criteria=_criteria_tables(facts), criteria_plots=criteria_plots, dropped_grids=dropped_grids,
        kept_grid=kept_grid, histogram_plots=plots or "<p>No scores recorded.</p>", download_plots=download_plots,
        domains_table=_domains_table(facts) if facts.domains else "", measures_table=_measures_table(facts),
        plotlyjs=get_plotlyjs(), data=json.dumps(data).replace("</", "<\\/"), uid_mix=UID_MIX)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}}
header{{background:#1d2733;color:#fff;padding:16px 28px}} header h1{{margin:0;font-size:22px}}
header p{{margin:4px 0 0;color:#c9d3de;font-size:13px}}
nav{{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde2e8;padding:8px 28px;z-index:5;font-size:14px}}
nav a{{margin-right:16px;color:#3b7dd8;text-decoration:none}}
main{{padding:8px 28px 40px;max-width:1400px}} h2{{margin-top:32px;border-bottom:2px solid #dde2e8;padding-bottom:4px}}
h3 small,h2 small{{color:#6b7785;font-weight:normal;font-size:13px}}
table{{border-collapse:collapse;background:#fff;margin:8px 0;font-size:14px}}
th,td{{border:1px solid #dde2e8;padding:5px 10px;text-align:left}} td[data-field],td:nth-child(2){{text-align:right}}
th{{background:#eef1f5}}
.row{{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}} .plot{{background:#fff;min-width:420px;flex:1}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}}
.thumb{{margin:0;background:#fff;border:1px solid #dde2e8;border-radius:6px;overflow:hidden;font-size:12px}}
.thumb img{{width:100%;height:130px;object-fit:cover;display:block;background:#eee}}
.noimg{{height:130px;display:flex;align-items:center;justify-content:center;color:#999;background:#f0f0f0}}
figcaption{{padding:4px 6px}} .cap{{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
.val{{display:block;color:#b5452c;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
#uid-form input{{width:380px;font-family:monospace;padding:6px}} #uid-form button{{padding:6px 14px}}
#uid-result{{margin-top:10px;background:#fff;border:1px solid #dde2e8;padding:10px;min-height:24px}}
#uid-result img{{max-width:160px;display:block;margin-top:6px}}
</style></head><body>
<header><h1>{title}</h1><p>{job_root} · {samples} samples in {shards} shards · {stages}</p></header>
<nav><a href="#funnel">funnel</a><a href="#criteria">filter criteria</a><a href="#dropped">dropped samples</a>
<a href="#kept">kept samples</a><a href="#scores">scores</a><a href="#downloads">downloads</a>
<a href="#lookup">why is this sample gone?</a></nav>
<main>
<h2 id="funnel">Funnel <small>samples per stage; counts from the shards' ledgers</small></h2>
<div class="row"><div>{funnel_table}</div><div class="plot" id="plot-funnel"></div></div>
<div class="plot" id="plot-reasons"></div>
<h2 id="criteria">Filter criteria <small>each criterion counts what it removed among what the earlier ones left</small></h2>
{criteria}<div class="row">{criteria_plots}</div>
<h2 id="dropped">Dropped samples <small>by reason; a sample of each, drawn from {sampled_shards} shards; hover for
uid, caption, URL and the deciding value</small></h2>
{dropped_grids}
<h2 id="kept">Kept samples</h2>
{kept_grid}
<h2 id="scores">Scores <small>with the threshold each stage drops at</small></h2>
<div class="row">{histogram_plots}</div>
<h2 id="downloads">Downloads</h2>
<div class="row">{download_plots}</div>
{domains_table}
<h3>Timings</h3>
{measures_table}
<h2 id="lookup">Why is this sample gone?</h2>
<form id="uid-form" onsubmit="return false"><input id="uid-input" placeholder="uid (32 hex characters)"
 autocomplete="off"> <button id="uid-button" type="submit">look up</button></form>
<div id="uid-result"></div>
</main>
<script>{plotlyjs}</script>
<script type="application/json" id="winnow-data">{data}</script>
<script>
(function () {{
  const data = JSON.parse(document.getElementById("winnow-data").textContent);
  for (const [name, figure] of Object.entries(data.figures)) {{
    const node = document.getElementById("plot-" + name);
    if (node) Plotly.newPlot(node, figure.data, figure.layout, {{displaylogo: false, responsive: true}});
  }}
  let index = null;
  function records() {{
    if (index === null) {{
      const raw = atob(data.index);
      const bytes = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
      index = new DataView(bytes.buffer);
    }}
    return index;
  }}
  function outcomeOf(uid) {{
    const view = records(), n = view.byteLength / 10;
    const want = BigInt("0x" + uid.slice(0, 16)) ^ BigInt.asUintN(64, BigInt("0x" + uid.slice(16)) * {uid_mix}n);
    let lo = 0, hi = n - 1;
    while (lo <= hi) {{
      const mid = (lo + hi) >> 1, got = view.getBigUint64(mid * 10, false);
      if (got === want) return data.codes[view.getUint16(mid * 10 + 8, false)];
      if (got < want) lo = mid + 1; else hi = mid - 1;
    }}
    return null;
  }}
  function describe(code) {{
    const [stage, reason] = code;
    if (stage === "kept") return "kept: it is in the job's final subset";
    if (stage === "downloader") return "not downloaded: " + reason;
    if (stage === "source") return "failed in the shards curated: " + reason;
    if (stage === "filter") return "dropped by the filter: " + reason;
    return "dropped by " + stage + ": " + reason;
  }}
  function show(node, text) {{ const p = document.createElement("div"); p.textContent = text; node.appendChild(p); }}
  document.getElementById("uid-form").addEventListener("submit", function () {{
    const uid = document.getElementById("uid-input").value.trim().toLowerCase();
    const out = document.getElementById("uid-result");
    out.replaceChildren();
    if (!/^[0-9a-f]{{32}}$/.test(uid)) {{ show(out, "A uid is 32 hexadecimal characters."); return; }}
    const code = outcomeOf(uid);
    if (code === null) {{ show(out, "uid " + uid + " is not in this job."); return; }}
    const verdict = document.createElement("strong");
    verdict.id = "uid-verdict"; verdict.textContent = describe(code); out.appendChild(verdict);
    const seen = data.sampled[uid];
    if (seen) {{
      show(out, seen.text || ""); show(out, seen.url || ""); if (seen.value) show(out, seen.value);
      if (seen.thumb) {{ const img = document.createElement("img"); img.src = seen.thumb; out.appendChild(img); }}
    }}
  }});
}})();
</script></body></html>
"""
