//! Comparing two runs of a suite case by case: which cases flipped. A case passes in a run
//! when every attempt of it passed; a regression is a case (of a target both runs have) that
//! passed in the baseline and does not now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::report::RunReport;

/// A case of a target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CaseKey {
    pub target: String,
    pub case_id: String,
}

/// How a run differs from its baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline's run id, when it was a stored run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_run: Option<i64>,
    /// Passed in the baseline, fail now.
    pub regressions: Vec<CaseKey>,
    /// Failed in the baseline, pass now.
    pub fixes: Vec<CaseKey>,
    /// Only in this run, or only in the baseline.
    pub added: Vec<CaseKey>,
    pub removed: Vec<CaseKey>,
    /// In both runs with the same outcome.
    pub unchanged: usize,
}

impl Comparison {
    /// `against run 12: 1 regressions, 0 fixed, 5 unchanged, 0 new, 0 gone`.
    pub fn summary(&self) -> String {
        let against = self
            .baseline_run
            .map_or_else(|| "the baseline".to_owned(), |id| format!("run {id}"));
        format!(
            "against {against}: {} regressions, {} fixed, {} unchanged, {} new, {} gone",
            self.regressions.len(),
            self.fixes.len(),
            self.unchanged,
            self.added.len(),
            self.removed.len()
        )
    }
}

/// Whether each case passed in `run`: all its attempts did.
fn outcomes(run: &RunReport) -> BTreeMap<CaseKey, bool> {
    let mut cases = BTreeMap::new();
    for r in &run.results {
        let key = CaseKey {
            target: r.target.clone(),
            case_id: r.case_id.clone(),
        };
        let passed = cases.entry(key).or_insert(true);
        *passed &= r.passed;
    }
    cases
}

pub fn compare(baseline: &RunReport, run: &RunReport) -> Comparison {
    let (before, after) = (outcomes(baseline), outcomes(run));
    let mut c = Comparison {
        baseline_run: baseline.run_id,
        ..Comparison::default()
    };
    for (key, &now) in &after {
        match before.get(key) {
            None => c.added.push(key.clone()),
            Some(&then) if then && !now => c.regressions.push(key.clone()),
            Some(&then) if !then && now => c.fixes.push(key.clone()),
            Some(_) => c.unchanged += 1,
        }
    }
    c.removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    c
}
