//! A run's results and what they add up to: per-case outcomes, per-target pass rates with
//! pass@k and pass^k, and whether the suite's thresholds were met. The JSON report is this
//! structure serialised; `junit.rs` and `markdown.rs` render it for CI.

use serde::{Deserialize, Serialize};

use super::assertion::Verdict;

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The run's id in the store, once stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    pub suite: String,
    pub suite_path: String,
    /// Where the targets were called: `in-process` or the URL given with `--against`.
    pub endpoint: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: f64,
    pub threshold: f64,
    pub repeat: u32,
    /// The most calls in flight asked for, and the lowest the target's 429s brought it to.
    pub concurrency: usize,
    pub lowest_concurrency: usize,
    pub targets: Vec<TargetSummary>,
    pub results: Vec<CaseResult>,
    /// Every target met its threshold.
    pub passed: bool,
    /// Case flips against a baseline run, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<super::compare::Comparison>,
}

/// What a target's prompt was, as called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptUsed {
    pub name: String,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetSummary {
    pub label: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptUsed>,
    pub cases: usize,
    /// Cases × repeats, and how many of them passed.
    pub attempts: usize,
    pub passed_attempts: usize,
    /// Attempts that passed, over all attempts.
    pub pass_rate: f64,
    /// With repeats: the share of cases where at least one of the k attempts passed
    /// (pass@k), and where all k did (pass^k), k being the repeat count.
    pub pass_at_k: f64,
    pub pass_all_k: f64,
    pub errors: usize,
    /// The pass rate this target needed.
    pub threshold: f64,
    pub met_threshold: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub cached: usize,
}

/// One attempt of one case on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub target: String,
    pub case_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// 0-based.
    pub repeat: u32,
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// The model's answer; None when the call failed.
    pub output: Option<String>,
    /// Why the call failed, when it did (the case fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub verdicts: Vec<Verdict>,
    /// Weighted share of the assertions that passed.
    pub score: f64,
    pub threshold: f64,
    pub passed: bool,
    pub latency_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// The answer came from the response cache.
    pub cached: bool,
}

impl CaseResult {
    /// Why the attempt failed: the call's error, or each failing assertion with its reason.
    pub fn failure(&self) -> String {
        match &self.error {
            Some(e) => format!("error: {e}"),
            None => self
                .verdicts
                .iter()
                .filter(|v| !v.pass)
                .map(|v| format!("{}: {}", v.assertion, v.reason))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl TargetSummary {
    /// `name#version` of the registry prompt the target called, else `—`.
    pub fn prompt_text(&self) -> String {
        self.prompt
            .as_ref()
            .map_or_else(|| "—".to_owned(), |p| format!("{}#{}", p.name, p.version))
    }
}

/// The weighted score of `verdicts`: 1 when there is no weight at all.
pub fn score(verdicts: &[Verdict]) -> f64 {
    let total: f64 = verdicts.iter().map(|v| v.weight).sum();
    if total == 0.0 {
        return if verdicts.iter().all(|v| v.pass) {
            1.0
        } else {
            0.0
        };
    }
    verdicts
        .iter()
        .filter(|v| v.pass)
        .map(|v| v.weight)
        .sum::<f64>()
        / total
}

/// n choose k, as a float (exact for the small numbers repeats use).
fn choose(n: u32, k: u32) -> f64 {
    if k > n {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

/// The unbiased pass@k estimate for a case that passed `c` of `n` attempts (Chen et al.,
/// 2021): the chance that at least one of k attempts drawn without replacement passes.
pub fn pass_at_k(n: u32, c: u32, k: u32) -> f64 {
    if n == 0 || k == 0 {
        return 0.0;
    }
    1.0 - choose(n - c, k) / choose(n, k)
}

/// pass^k (Yao et al., 2024, τ-bench): the chance that all of k attempts drawn without
/// replacement pass.
pub fn pass_all_k(n: u32, c: u32, k: u32) -> f64 {
    if n == 0 || k == 0 {
        return 0.0;
    }
    choose(c, k) / choose(n, k)
}

/// The value below which `q` of `sorted` lies (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "q is in 0..=1 and the rank is within the slice"
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sums up one target's results.
pub fn summarize(
    label: &str,
    model: &str,
    prompt: Option<PromptUsed>,
    results: &[&CaseResult],
    repeat: u32,
    threshold: f64,
) -> TargetSummary {
    let mut by_case: Vec<(&str, u32, u32)> = Vec::new();
    for r in results {
        match by_case.iter_mut().find(|(id, _, _)| *id == r.case_id) {
            Some((_, n, c)) => {
                *n += 1;
                *c += u32::from(r.passed);
            }
            None => by_case.push((&r.case_id, 1, u32::from(r.passed))),
        }
    }
    let attempts = results.len();
    let passed = results.iter().filter(|r| r.passed).count();
    let pass_rate = if attempts == 0 {
        0.0
    } else {
        passed as f64 / attempts as f64
    };
    let cases = by_case.len();
    let mean = |f: &dyn Fn(u32, u32) -> f64| {
        if cases == 0 {
            0.0
        } else {
            by_case.iter().map(|&(_, n, c)| f(n, c)).sum::<f64>() / cases as f64
        }
    };
    let mut latencies: Vec<f64> = results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    TargetSummary {
        label: label.to_owned(),
        model: model.to_owned(),
        prompt,
        cases,
        attempts,
        passed_attempts: passed,
        pass_rate,
        pass_at_k: mean(&|n, c| pass_at_k(n, c, repeat.min(n))),
        pass_all_k: mean(&|n, c| pass_all_k(n, c, repeat.min(n))),
        errors: results.iter().filter(|r| r.error.is_some()).count(),
        threshold,
        met_threshold: attempts > 0 && pass_rate >= threshold,
        prompt_tokens: results.iter().map(|r| r.prompt_tokens).sum(),
        completion_tokens: results.iter().map(|r| r.completion_tokens).sum(),
        // Plus 0: an empty float sum is -0, which prints as `-0.000000`.
        cost_usd: results.iter().filter_map(|r| r.cost_usd).sum::<f64>() + 0.0,
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p95_ms: percentile(&latencies, 0.95),
        cached: results.iter().filter(|r| r.cached).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_closed_forms() {
        // One attempt of n passing: pass@1 = 1/n, pass@n = 1.
        assert!((pass_at_k(5, 1, 1) - 0.2).abs() < 1e-12);
        assert!((pass_at_k(5, 1, 5) - 1.0).abs() < 1e-12);
        // 1 - C(2,2)/C(4,2) = 1 - 1/6.
        assert!((pass_at_k(4, 2, 2) - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 0, 2), 0.0);
    }

    #[test]
    fn pass_all_k_needs_every_drawn_attempt_to_pass() {
        // C(3,2)/C(4,2) = 3/6.
        assert!((pass_all_k(4, 3, 2) - 0.5).abs() < 1e-12);
        assert_eq!(pass_all_k(4, 3, 4), 0.0);
        assert_eq!(pass_all_k(4, 4, 4), 1.0);
    }
}
