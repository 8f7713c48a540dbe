//! The JUnit XML report, which CI systems show as test results: one test suite per target,
//! one test case per case and attempt; a failed case carries its failing assertions' reasons,
//! a case whose call failed is an error.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::report::RunReport;

pub fn render(run: &RunReport) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new(format!("pasarela eval {}", run.suite));
    report.set_timestamp(run.started_at.fixed_offset());
    report.set_time(Duration::from_secs_f64(run.duration_ms.max(0.0) / 1000.0));
    for target in &run.targets {
        let mut suite = TestSuite::new(format!("{} / {}", run.suite, target.label));
        suite.add_property(("pass_rate", format!("{:.4}", target.pass_rate).as_str()));
        suite.add_property(("threshold", format!("{}", target.threshold).as_str()));
        suite.add_property(("model", target.model.as_str()));
        if let Some(prompt) = &target.prompt {
            suite.add_property((
                "prompt",
                format!("{}#{}", prompt.name, prompt.version).as_str(),
            ));
        }
        for r in run.results.iter().filter(|r| r.target == target.label) {
            let status = match (&r.error, r.passed) {
                (Some(error), _) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(error.as_str());
                    s
                }
                (None, true) => TestCaseStatus::success(),
                (None, false) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!(
                        "score {:.2} below {:.2}: {}",
                        r.score,
                        r.threshold,
                        r.failure()
                    ));
                    s.set_type("assertion");
                    s
                }
            };
            let name = match run.repeat {
                1 => r.case_id.clone(),
                _ => format!("{} (attempt {})", r.case_id, r.repeat + 1),
            };
            let mut case = TestCase::new(name, status);
            case.set_classname(format!("{}.{}", run.suite, target.label));
            case.set_assertions(r.verdicts.len());
            case.set_time(Duration::from_secs_f64(r.latency_ms.max(0.0) / 1000.0));
            if let Some(output) = &r.output {
                case.set_system_out(output.as_str());
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string()
}
