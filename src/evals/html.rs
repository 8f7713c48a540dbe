//! The HTML report: one self-contained page (no scripts, no external files) with the targets'
//! figures and every attempt's output and verdicts, for a CI artifact a reviewer opens.

use std::fmt::Write as _;

use super::report::RunReport;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(run: &RunReport) -> String {
    let mut h = String::new();
    let verdict = if run.passed { "passed" } else { "failed" };
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Eval {suite}: {verdict}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top;text-align:left}}\
         .pass{{color:#176117}}.fail{{color:#a11}}pre{{white-space:pre-wrap;margin:0;max-width:40rem}}\
         </style></head><body><h1>Eval <code>{suite}</code>: <span class=\"{cls}\">{verdict}</span></h1>\
         <p>Repeat {repeat} · {endpoint} · {secs:.1} s · {started}</p>",
        suite = escape(&run.suite),
        cls = if run.passed { "pass" } else { "fail" },
        repeat = run.repeat,
        endpoint = escape(&run.endpoint),
        secs = run.duration_ms / 1000.0,
        started = run.started_at.to_rfc3339(),
    );
    h.push_str(
        "<h2>Targets</h2><table><tr><th>target</th><th>model</th><th>prompt</th><th>pass rate</th>\
         <th>needs</th><th>pass@k</th><th>pass^k</th><th>errors</th><th>p50 ms</th><th>p95 ms</th><th>tokens in/out</th>\
         <th>cost $</th></tr>",
    );
    for t in &run.targets {
        let prompt = t.prompt_text();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{:.1}%</td><td>{:.0}%</td><td>{:.2}</td>\
             <td>{:.2}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}/{}</td><td>{:.6}</td></tr>",
            escape(&t.label),
            escape(&t.model),
            escape(&prompt),
            if t.met_threshold { "pass" } else { "fail" },
            t.pass_rate * 100.0,
            t.threshold * 100.0,
            t.pass_at_k,
            t.pass_all_k,
            t.errors,
            t.latency_p50_ms,
            t.latency_p95_ms,
            t.prompt_tokens,
            t.completion_tokens,
            t.cost_usd
        );
    }
    h.push_str(
        "</table><h2>Cases</h2><table><tr><th>target</th><th>case</th><th>attempt</th>\
         <th>vars</th><th>output</th><th>score</th><th>verdicts</th></tr>",
    );
    for r in &run.results {
        let output = match (&r.output, &r.error) {
            (_, Some(e)) => format!("<span class=\"fail\">error: {}</span>", escape(e)),
            (Some(o), None) => format!("<pre>{}</pre>", escape(o)),
            (None, None) => String::new(),
        };
        let verdicts: String = r
            .verdicts
            .iter()
            .map(|v| {
                format!(
                    "<div class=\"{}\">{} {}: {}</div>",
                    if v.pass { "pass" } else { "fail" },
                    if v.pass { "✓" } else { "✗" },
                    escape(&v.assertion),
                    escape(&v.reason)
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td><td>{output}</td>\
             <td class=\"{}\">{:.2}</td><td>{verdicts}</td></tr>",
            escape(&r.target),
            escape(&r.case_id),
            r.repeat + 1,
            escape(&serde_json::Value::Object(r.vars.clone()).to_string()),
            if r.passed { "pass" } else { "fail" },
            r.score,
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
