//! The virtual keys' repository on both engines.

use pasarela::store::{Budget, BudgetPeriod, NewKey, StoreError};

use crate::backends::{TestDb, on_both_backends};

fn new_key(name: &str, hash: &str) -> NewKey {
    NewKey {
        name: name.into(),
        key_hash: hash.into(),
        key_prefix: "sk-pasarela-abcd".into(),
        allowed_models: vec!["gpt-a".into(), "gpt-b".into()],
        rpm: Some(60),
        tpm: Some(10_000),
        max_concurrent: Some(4),
        budget: Some(Budget {
            micro_usd: 12_500_000,
            period: BudgetPeriod::Month,
        }),
        record_content: true,
    }
}

async fn created_keys_round_trip_and_are_found_by_hash_while_active(db: TestDb) {
    let keys = db.open().await.keys();
    let before = keys.change_counter().await.unwrap();
    let created = keys.create(&new_key("team-a", "sha256:aa")).await.unwrap();
    let plain = NewKey {
        allowed_models: vec![],
        rpm: None,
        tpm: None,
        max_concurrent: None,
        budget: None,
        record_content: false,
        ..new_key("b-plain", "sha256:bb")
    };
    keys.create(&plain).await.unwrap();
    assert!(keys.change_counter().await.unwrap() >= before + 2);
    assert_eq!(created.allowed_models, ["gpt-a", "gpt-b"]);
    assert_eq!(created.rpm, Some(60));
    assert_eq!(created.budget.unwrap().period, BudgetPeriod::Month);
    assert_eq!(created.revoked_at, None);
    assert!(created.record_content);

    let found = keys.find_by_hash("sha256:aa").await.unwrap().unwrap();
    assert_eq!(found, created);
    let names: Vec<String> = keys
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["b-plain", "team-a"]);
    let plain = keys.find_by_hash("sha256:bb").await.unwrap().unwrap();
    assert_eq!(
        (plain.rpm, plain.budget, plain.allowed_models.len()),
        (None, None, 0)
    );
    assert!(keys.find_by_hash("sha256:cc").await.unwrap().is_none());
}

async fn a_revoked_key_is_not_found_and_frees_its_name(db: TestDb) {
    let keys = db.open().await.keys();
    keys.create(&new_key("team-a", "sha256:aa")).await.unwrap();
    let counter = keys.change_counter().await.unwrap();
    let revoked = keys.revoke("team-a").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(keys.change_counter().await.unwrap(), counter + 1);
    assert!(keys.find_by_hash("sha256:aa").await.unwrap().is_none());
    assert!(keys.active().await.unwrap().is_empty());
    assert!(matches!(
        keys.revoke("team-a").await,
        Err(StoreError::NotFound(_))
    ));
    // The name may be used again; the revoked key stays listed.
    keys.create(&new_key("team-a", "sha256:a2")).await.unwrap();
    let all = keys.list().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all.iter().filter(|k| k.revoked_at.is_none()).count(), 1);
}

async fn an_active_name_cannot_be_taken_twice(db: TestDb) {
    let keys = db.open().await.keys();
    keys.create(&new_key("team-a", "sha256:aa")).await.unwrap();
    let counter = keys.change_counter().await.unwrap();
    let err = keys
        .create(&new_key("team-a", "sha256:bb"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(keys.change_counter().await.unwrap(), counter);
    assert_eq!(keys.list().await.unwrap().len(), 1);
}

on_both_backends!(
    created_keys_round_trip_and_are_found_by_hash_while_active,
    a_revoked_key_is_not_found_and_frees_its_name,
    an_active_name_cannot_be_taken_twice,
);
