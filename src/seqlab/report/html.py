"""The tour's report: one self-contained HTML page (pictures inlined, no network) from results.json."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from seqlab.experiments.eras import ERAS

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;
color:#1d2330;line-height:1.5}
h1{margin-bottom:.2rem}.sub{color:#5a6275;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{border-bottom:1px solid #dde1e8;padding:.35rem .6rem;
text-align:left;vertical-align:top;font-size:.92rem}th{background:#f3f5f9}
.verdict{font-weight:600;padding:.1rem .5rem;border-radius:.6rem;white-space:nowrap}
.confirmed{background:#dff3e3;color:#1d6b32}.not-confirmed{background:#fde8d4;color:#8a4a0c}.error{background:#fbdada;color:#8f1c1c}
.timeline{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:.7rem;margin:1rem 0}
.era{border:1px solid #dde1e8;border-radius:.5rem;padding:.6rem .8rem;font-size:.86rem;background:#fafbfd}
.era b{display:block;font-size:.95rem}.era .years{color:#5a6275}
section.exp{border-top:2px solid #dde1e8;margin-top:2rem;padding-top:.5rem}
blockquote{border-left:4px solid #b9c3d6;margin:.5rem 0;padding:.2rem .8rem;color:#384055;font-style:italic}
img{max-width:100%;border:1px solid #e5e8ee;margin:.4rem 0}pre{background:#f6f7f9;padding:.6rem;overflow-x:auto;font-size:.8rem}
.meta{color:#5a6275;font-size:.88rem}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format(v) for v in value[:12]) + (", …" if len(value) > 12 else "") + "]"
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:300]
    return str(value)


def _image_tag(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p class='meta'>missing picture: {_esc(path.name)}</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{_esc(alt)}'>"


def _verdict(verdict: str) -> str:
    return f"<span class='verdict {verdict.replace(' ', '-')}'>{_esc(verdict)}</span>"


def _section(exp: dict[str, Any], out_dir: Path) -> str:
    figures = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_format(v))}</td></tr>" for k, v in exp["figures"].items())
    images = "".join(_image_tag(out_dir / image, f"{exp['name']}: {Path(image).stem}") for image in exp["images"])
    checks = "".join(f"<li>{'met' if met else '<b>not met</b>'}: {_esc(label)}</li>" for label, met in exp.get("checks", {}).items())
    checks = f"<ul class='checks'>{checks}</ul>" if checks else ""
    error = f"<pre>{_esc(exp.get('error', ''))}\n{_esc(exp.get('traceback', ''))}</pre>" if exp["verdict"] == "error" else ""
    return f"""
<section class="exp" id="exp-{_esc(exp['name'])}">
<h2>{_esc(exp['name'])} {_verdict(exp['verdict'])}</h2>
<p class="meta">era: {_esc(exp['era'])} · source: {_esc(exp['source'])} · time: {exp['seconds']:.1f} s</p>
<blockquote>{_esc(exp['claim'])}</blockquote>
<p><b>Threshold.</b> {_esc(exp['threshold'])}</p>
{checks}
<p><b>Setup.</b> {_esc(exp.get('setup') or '—')}</p>
<table><tr><th>figure</th><th>measured</th></tr>{figures}</table>
{error}{images}
</section>"""


def render(report: dict[str, Any], out_dir: Path) -> str:
    """The report page for a results.json mapping (pictures read from `out_dir`)."""
    experiments = report["experiments"]
    rows = "".join(
        f"<tr><td><a href='#exp-{_esc(e['name'])}'>{_esc(e['name'])}</a></td><td>{_esc(e['era'])}</td>"
        f"<td>{_verdict(e['verdict'])}</td><td>{e['seconds']:.1f} s</td></tr>"
        for e in experiments
    )
    timeline = "".join(
        f"<div class='era'><b>{_esc(era.title)}</b><span class='years'>{_esc(era.years)} · {_esc(era.people)}</span>"
        f"<p>{_esc(era.idea)}</p><p><i>Limit left:</i> {_esc(era.limit)}</p></div>"
        for era in ERAS
    )
    counts = {v: sum(e["verdict"] == v for e in experiments) for v in ("confirmed", "not confirmed", "error")}
    machine = report["machine"]
    sections = "".join(_section(e, out_dir) for e in experiments)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>seqlab tour</title><style>{STYLE}</style></head>
<body>
<h1>seqlab tour</h1>
<p class="sub">From the McCulloch–Pitts neuron to the Transformer: each claim of the seeds, measured.</p>
<p class="meta">mode: <b>{_esc(report['mode'])}</b> · seed {report['seed']} · machine: {_esc(machine['device'])},
{machine['cpus']} CPUs, {machine['torch_threads']} torch threads available (the experiments' small models run on one), torch {_esc(machine['torch'])} ·
total time {report['seconds']:.1f} s · {counts['confirmed']} confirmed, {counts['not confirmed']} not confirmed,
{counts['error']} errors</p>
<h2>Timeline</h2><div class="timeline">{timeline}</div>
<h2>Summary</h2>
<table id="summary"><tr><th>experiment</th><th>era</th><th>verdict</th><th>time</th></tr>{rows}</table>
{sections}
</body></html>
"""


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "index.html"
    path.write_text(render(report, out_dir), encoding="utf-8")
    return path
