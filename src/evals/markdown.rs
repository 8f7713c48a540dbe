//! The Markdown summary, written for a pull request comment: one line per target with its pass
//! rate against the threshold, then the failing cases with the reasons.

use std::fmt::Write as _;

use super::report::RunReport;

/// How many failing attempts the summary lists before it says how many more there are.
const LISTED_FAILURES: usize = 20;

pub fn render(run: &RunReport) -> String {
    let mut md = String::new();
    let verdict = if run.passed { "passed" } else { "failed" };
    let _ = writeln!(md, "## Eval `{}`: {verdict}\n", run.suite);
    let _ = writeln!(
        md,
        "Repeat {} · {} · {:.1} s\n",
        run.repeat,
        run.endpoint,
        run.duration_ms / 1000.0
    );
    let _ = writeln!(
        md,
        "| target | model | prompt | pass rate | needs | pass@k | pass^k | errors | p50 ms | tokens in/out | cost $ | |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for t in &run.targets {
        let prompt = t.prompt_text();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1}% | {:.0}% | {:.2} | {:.2} | {} | {:.0} | {}/{} | {:.6} | {} |",
            cell(&t.label),
            cell(&t.model),
            cell(&prompt),
            t.pass_rate * 100.0,
            t.threshold * 100.0,
            t.pass_at_k,
            t.pass_all_k,
            t.errors,
            t.latency_p50_ms,
            t.prompt_tokens,
            t.completion_tokens,
            t.cost_usd,
            if t.met_threshold { "✅" } else { "❌" }
        );
    }
    if let Some(c) = &run.baseline {
        let _ = writeln!(md, "\n{}.", c.summary());
        for k in &c.regressions {
            let _ = writeln!(md, "- regressed: **{}** · `{}`", cell(&k.target), k.case_id);
        }
        for k in &c.fixes {
            let _ = writeln!(md, "- fixed: **{}** · `{}`", cell(&k.target), k.case_id);
        }
    }
    let failures: Vec<_> = run.results.iter().filter(|r| !r.passed).collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\n### Failing cases\n");
        for r in failures.iter().take(LISTED_FAILURES) {
            let why = r.failure();
            let attempt = match run.repeat {
                1 => String::new(),
                _ => format!(" (attempt {})", r.repeat + 1),
            };
            let _ = writeln!(
                md,
                "- **{}** · `{}`{attempt}: {}",
                cell(&r.target),
                r.case_id,
                cell(&why)
            );
        }
        if failures.len() > LISTED_FAILURES {
            let _ = writeln!(md, "- … and {} more", failures.len() - LISTED_FAILURES);
        }
    }
    md
}

/// Text safe inside a table cell: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}
