//! Eval runs on both engines: stored with their targets, listed, blessed as a suite's baseline
//! (a later bless replaces it), and found by the prompt version they tested.

use chrono::{TimeZone, Utc};
use pasarela::store::{EvalTargetRow, NewEvalRun, StoreError};

use crate::backends::{TestDb, on_both_backends};

fn target(label: &str, prompt: Option<(&str, i64)>, passed: i64) -> EvalTargetRow {
    EvalTargetRow {
        label: label.to_owned(),
        model: "m".to_owned(),
        prompt: prompt.map(|(n, v)| (n.to_owned(), v)),
        attempts: 4,
        passed_attempts: passed,
        met_threshold: passed == 4,
    }
}

async fn runs_are_stored_listed_blessed_and_found_by_prompt(db: TestDb) {
    let store = db.open().await;
    let runs = store.eval_runs();
    let started = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap();
    let first = runs
        .insert(&NewEvalRun {
            suite: "smoke",
            started_at: started,
            duration_ms: 1234,
            endpoint: "in-process",
            passed: true,
            report: "{\"suite\": \"smoke\", \"results\": [\"é ✓\"]}",
            targets: vec![
                target("prod", Some(("greeting", 2)), 4),
                target("raw", None, 4),
            ],
        })
        .await
        .unwrap();
    let second = runs
        .insert(&NewEvalRun {
            suite: "smoke",
            started_at: started + chrono::Duration::minutes(5),
            duration_ms: 99,
            endpoint: "http://x/v1",
            passed: false,
            report: "{}",
            targets: vec![target("prod", Some(("greeting", 3)), 1)],
        })
        .await
        .unwrap();
    runs.insert(&NewEvalRun {
        suite: "other",
        started_at: started,
        duration_ms: 1,
        endpoint: "in-process",
        passed: true,
        report: "{}",
        targets: vec![],
    })
    .await
    .unwrap();
    assert!(second > first);

    let (row, report) = runs.get(first).await.unwrap();
    assert_eq!(report, "{\"suite\": \"smoke\", \"results\": [\"é ✓\"]}");
    assert_eq!(
        (row.suite.as_str(), row.started_at, row.duration_ms),
        ("smoke", started, 1234)
    );
    assert!(row.passed && !row.blessed);
    assert!(matches!(runs.get(9999).await, Err(StoreError::NotFound(_))));

    let smoke = runs.list(Some("smoke"), 10).await.unwrap();
    assert_eq!(
        smoke.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![second, first]
    );
    assert_eq!(runs.list(None, 10).await.unwrap().len(), 3);
    assert_eq!(runs.list(None, 1).await.unwrap().len(), 1);

    assert_eq!(runs.baseline("smoke").await.unwrap(), None);
    assert_eq!(runs.bless(first, "ana").await.unwrap(), "smoke");
    assert_eq!(runs.baseline("smoke").await.unwrap(), Some(first));
    runs.bless(second, "ben").await.unwrap();
    assert_eq!(runs.baseline("smoke").await.unwrap(), Some(second));
    assert_eq!(runs.baseline("other").await.unwrap(), None);
    let listed = runs.list(Some("smoke"), 10).await.unwrap();
    assert!(
        listed[0].blessed && !listed[1].blessed,
        "one baseline per suite"
    );
    assert!(matches!(
        runs.bless(9999, "x").await,
        Err(StoreError::NotFound(_))
    ));

    let greeting = runs.for_prompt("greeting", 10).await.unwrap();
    let versions: Vec<_> = greeting
        .iter()
        .map(|e| (e.run.id, e.target.prompt.clone(), e.target.passed_attempts))
        .collect();
    assert_eq!(
        versions,
        vec![
            (second, Some(("greeting".to_owned(), 3)), 1),
            (first, Some(("greeting".to_owned(), 2)), 4)
        ]
    );
    assert!(runs.for_prompt("absent", 10).await.unwrap().is_empty());
}

on_both_backends!(runs_are_stored_listed_blessed_and_found_by_prompt);
