//! The prompt registry's repository, one behaviour per test, on both engines.

use pasarela::store::{
    LATEST_LABEL, MoveCause, MoveOutcome, NewVersion, PushOutcome, StoreError, VersionMeta,
};

use crate::backends::{TestDb, on_both_backends};

/// Hashes stand in for the caller's: the store only compares them.
fn new(content: &str) -> NewVersion<'_> {
    NewVersion {
        content,
        content_hash: content,
        author: "ana",
        message: Some("why"),
    }
}

async fn push(db: &pasarela::store::Prompts, name: &str, content: &str) -> VersionMeta {
    match db.push_version(name, new(content)).await.unwrap() {
        PushOutcome::Created(meta) => meta,
        PushOutcome::Unchanged(meta) => panic!("expected a new version, got {meta:?}"),
    }
}

fn assert_not_found(result: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match result {
        Err(StoreError::NotFound(message)) => assert_eq!(message, what),
        other => panic!("expected NotFound({what}), got {other:?}"),
    }
}

async fn first_push_creates_version_1_and_points_latest_at_it(db: TestDb) {
    let prompts = db.open().await.prompts();
    let meta = push(&prompts, "greeting", r#"{"text":"hi"}"#).await;
    assert_eq!(meta.prompt, "greeting");
    assert_eq!(meta.version, 1);
    assert_eq!(meta.author, "ana");
    assert_eq!(meta.message.as_deref(), Some("why"));
    let latest = prompts
        .get_by_label("greeting", LATEST_LABEL)
        .await
        .unwrap();
    assert_eq!(latest.meta, meta);
    assert_eq!(latest.content, r#"{"text":"hi"}"#);
}

async fn versions_are_numbered_consecutively_per_prompt(db: TestDb) {
    let prompts = db.open().await.prompts();
    assert_eq!(push(&prompts, "a", "a1").await.version, 1);
    assert_eq!(push(&prompts, "b", "b1").await.version, 1);
    assert_eq!(push(&prompts, "a", "a2").await.version, 2);
    assert_eq!(push(&prompts, "a", "a3").await.version, 3);
    assert_eq!(push(&prompts, "b", "b2").await.version, 2);
    let latest = prompts.get_by_label("a", LATEST_LABEL).await.unwrap();
    assert_eq!((latest.meta.version, latest.content.as_str()), (3, "a3"));
}

async fn push_of_the_latest_content_writes_nothing(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    let two = push(&prompts, "p", "two").await;
    let counter = prompts.change_counter().await.unwrap();
    let again = NewVersion {
        author: "someone else",
        message: None,
        ..new("two")
    };
    assert_eq!(
        prompts.push_version("p", again).await.unwrap(),
        PushOutcome::Unchanged(two)
    );
    assert_eq!(prompts.list_versions("p").await.unwrap().len(), 2);
    assert_eq!(prompts.label_history("p").await.unwrap().len(), 2);
    assert_eq!(prompts.change_counter().await.unwrap(), counter);
}

async fn push_of_an_older_versions_content_creates_a_new_version(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    push(&prompts, "p", "two").await;
    let back = push(&prompts, "p", "one").await;
    assert_eq!(back.version, 3);
    assert_eq!(prompts.get_version("p", 3).await.unwrap().content, "one");
}

async fn content_comes_back_byte_for_byte(db: TestDb) {
    let prompts = db.open().await.prompts();
    // Key order, spacing, escapes and non-ASCII text that a JSON column type would normalise.
    let content = "{\"z\": 1,  \"a\":[\"ñandú 🦤\", \"\\u00e9\"],\n\"m\":null}";
    push(&prompts, "p", content).await;
    assert_eq!(prompts.get_version("p", 1).await.unwrap().content, content);
}

async fn unknown_prompt_version_or_label_is_not_found_and_says_which(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    assert_not_found(prompts.get_version("nope", 1).await, "prompt `nope`");
    assert_not_found(prompts.get_version("p", 2).await, "version 2 of prompt `p`");
    assert_not_found(prompts.get_by_label("nope", "prod").await, "prompt `nope`");
    assert_not_found(
        prompts.get_by_label("p", "prod").await,
        "label `prod` of prompt `p`",
    );
    assert_not_found(prompts.list_versions("nope").await, "prompt `nope`");
    assert_not_found(prompts.label_history("nope").await, "prompt `nope`");
}

async fn move_label_points_it_and_records_the_move(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    push(&prompts, "p", "two").await;
    let created = prompts.move_label("p", "prod", 1, "bo").await.unwrap();
    let MoveOutcome::Moved(created) = created else {
        panic!("expected a move, got {created:?}");
    };
    assert_eq!(
        (created.label.as_str(), created.from, created.to),
        ("prod", None, 1)
    );
    assert_eq!(
        (created.actor.as_str(), created.cause),
        ("bo", MoveCause::Move)
    );
    assert_eq!(
        prompts.get_by_label("p", "prod").await.unwrap().content,
        "one"
    );
    let MoveOutcome::Moved(moved) = prompts.move_label("p", "prod", 2, "cy").await.unwrap() else {
        panic!("expected a move");
    };
    assert_eq!((moved.from, moved.to), (Some(1), 2));
    assert_eq!(
        prompts.get_by_label("p", "prod").await.unwrap().content,
        "two"
    );
    let history = prompts.label_history("p").await.unwrap();
    assert_eq!(history[2..], [created, moved]);
}

async fn moving_a_label_where_it_points_records_nothing(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    prompts.move_label("p", "prod", 1, "bo").await.unwrap();
    let counter = prompts.change_counter().await.unwrap();
    assert_eq!(
        prompts.move_label("p", "prod", 1, "cy").await.unwrap(),
        MoveOutcome::Unchanged {
            label: "prod".into(),
            version: 1
        }
    );
    assert_eq!(prompts.label_history("p").await.unwrap().len(), 2);
    assert_eq!(prompts.change_counter().await.unwrap(), counter);
}

async fn moving_a_label_to_an_unknown_prompt_or_version_is_not_found_and_records_nothing(
    db: TestDb,
) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    let counter = prompts.change_counter().await.unwrap();
    assert_not_found(
        prompts.move_label("nope", "prod", 1, "bo").await,
        "prompt `nope`",
    );
    assert_not_found(
        prompts.move_label("p", "prod", 2, "bo").await,
        "version 2 of prompt `p`",
    );
    assert_not_found(
        prompts.get_by_label("p", "prod").await,
        "label `prod` of prompt `p`",
    );
    assert_eq!(prompts.label_history("p").await.unwrap().len(), 1);
    assert_eq!(prompts.change_counter().await.unwrap(), counter);
}

async fn list_versions_gives_each_version_its_labels(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    push(&prompts, "p", "two").await;
    push(&prompts, "p", "three").await;
    // Names whose order differs between byte order and a locale's collation.
    prompts.move_label("p", "prod", 2, "bo").await.unwrap();
    prompts.move_label("p", "Beta", 2, "bo").await.unwrap();
    prompts.move_label("p", "_canary", 2, "bo").await.unwrap();
    let listed = prompts.list_versions("p").await.unwrap();
    let shape: Vec<(i64, &str, Vec<&str>)> = listed
        .iter()
        .map(|v| {
            let labels = v.labels.iter().map(String::as_str).collect();
            (v.meta.version, v.meta.content_hash.as_str(), labels)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (1, "one", vec![]),
            (2, "two", vec!["Beta", "_canary", "prod"]),
            (3, "three", vec![LATEST_LABEL]),
        ]
    );
    assert_eq!(
        listed[2].meta,
        prompts.get_version("p", 3).await.unwrap().meta
    );
}

async fn list_prompts_summarises_each_prompt_by_name(db: TestDb) {
    let prompts = db.open().await.prompts();
    assert_eq!(prompts.list_prompts().await.unwrap(), []);
    push(&prompts, "zeta", "z1").await;
    push(&prompts, "Alpha", "a1").await;
    push(&prompts, "Alpha", "a2").await;
    push(&prompts, "_beta", "b1").await;
    let MoveOutcome::Moved(moved) = prompts.move_label("Alpha", "prod", 1, "bo").await.unwrap()
    else {
        panic!("expected a move");
    };
    let listed = prompts.list_prompts().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Alpha", "_beta", "zeta"]);
    let alpha = &listed[0];
    assert_eq!(alpha.latest_version, 2);
    assert_eq!(
        alpha.labels,
        [(LATEST_LABEL.to_owned(), 2), ("prod".to_owned(), 1)].into()
    );
    assert_eq!(alpha.updated_at, moved.moved_at);
    assert!(alpha.created_at <= alpha.updated_at);
    assert_eq!(listed[2].latest_version, 1);
}

async fn label_history_lists_pushes_and_moves_in_order(db: TestDb) {
    let prompts = db.open().await.prompts();
    push(&prompts, "p", "one").await;
    prompts.move_label("p", "prod", 1, "bo").await.unwrap();
    push(&prompts, "p", "two").await;
    prompts.move_label("p", "prod", 2, "cy").await.unwrap();
    let history = prompts.label_history("p").await.unwrap();
    let shape: Vec<_> = history
        .iter()
        .map(|m| (m.label.as_str(), m.from, m.to, m.actor.as_str(), m.cause))
        .collect();
    assert_eq!(
        shape,
        [
            (LATEST_LABEL, None, 1, "ana", MoveCause::Push),
            ("prod", None, 1, "bo", MoveCause::Move),
            (LATEST_LABEL, Some(1), 2, "ana", MoveCause::Push),
            ("prod", Some(1), 2, "cy", MoveCause::Move),
        ]
    );
    assert!(history.windows(2).all(|w| w[0].moved_at <= w[1].moved_at));
}

async fn change_counter_rises_with_every_write(db: TestDb) {
    let prompts = db.open().await.prompts();
    let start = prompts.change_counter().await.unwrap();
    push(&prompts, "p", "one").await;
    let after_push = prompts.change_counter().await.unwrap();
    assert!(after_push > start, "{after_push} after {start}");
    prompts.move_label("p", "prod", 1, "bo").await.unwrap();
    let after_move = prompts.change_counter().await.unwrap();
    assert!(after_move > after_push, "{after_move} after {after_push}");
    // Seen by another replica: a store with a pool of its own.
    let replica = db.open().await.prompts();
    assert_eq!(replica.change_counter().await.unwrap(), after_move);
}

async fn everything_survives_closing_and_reopening(db: TestDb) {
    let store = db.open().await;
    let prompts = store.prompts();
    push(&prompts, "p", "one").await;
    push(&prompts, "p", "two").await;
    prompts.move_label("p", "prod", 1, "bo").await.unwrap();
    let (versions, history, counter) = (
        prompts.list_versions("p").await.unwrap(),
        prompts.label_history("p").await.unwrap(),
        prompts.change_counter().await.unwrap(),
    );
    store.close().await;
    // Opening again finds the migrations applied and everything in place.
    let prompts = db.open().await.prompts();
    assert_eq!(prompts.list_versions("p").await.unwrap(), versions);
    assert_eq!(prompts.label_history("p").await.unwrap(), history);
    assert_eq!(prompts.change_counter().await.unwrap(), counter);
}

on_both_backends!(
    first_push_creates_version_1_and_points_latest_at_it,
    versions_are_numbered_consecutively_per_prompt,
    push_of_the_latest_content_writes_nothing,
    push_of_an_older_versions_content_creates_a_new_version,
    content_comes_back_byte_for_byte,
    unknown_prompt_version_or_label_is_not_found_and_says_which,
    move_label_points_it_and_records_the_move,
    moving_a_label_where_it_points_records_nothing,
    moving_a_label_to_an_unknown_prompt_or_version_is_not_found_and_records_nothing,
    list_versions_gives_each_version_its_labels,
    list_prompts_summarises_each_prompt_by_name,
    label_history_lists_pushes_and_moves_in_order,
    change_counter_rises_with_every_write,
    everything_survives_closing_and_reopening,
);
