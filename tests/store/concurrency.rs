//! Writers racing on one prompt, each through a store (a pool, so connections) of its own, as
//! replicas of the gateway would: nothing is lost, duplicated or numbered twice.

use std::sync::Arc;

use pasarela::store::{
    LATEST_LABEL, MoveCause, MoveOutcome, NewVersion, PushOutcome, Store, VersionMeta,
};
use tokio::sync::Barrier;

use crate::backends::{TestDb, on_both_backends};

const WRITERS: usize = 16;

/// `WRITERS` stores on `db`, each with its pool open before any writing starts.
async fn replicas(db: &TestDb) -> Vec<Store> {
    // The first applies the migrations; opening the rest at once then only checks them.
    let mut stores = vec![db.open().await];
    for _ in 1..WRITERS {
        stores.push(db.open().await);
    }
    stores
}

/// Runs `write(i, store)` for every replica at once, released together by a barrier.
async fn race<T, F, Fut>(stores: &[Store], write: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Store) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(stores.len()));
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = barrier.clone();
            let write = write(i, store.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                write.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("writer did not panic"));
    }
    out
}

async fn concurrent_pushes_of_distinct_contents_get_versions_1_to_16(db: TestDb) {
    let stores = replicas(&db).await;
    let outcomes = race(&stores, |i, store| async move {
        let content = format!("content {i}");
        let new = NewVersion {
            content: &content,
            content_hash: &content,
            author: "writer",
            message: None,
        };
        store.prompts().push_version("p", new).await.unwrap()
    })
    .await;

    let mut numbers: Vec<i64> = outcomes
        .iter()
        .map(|o| match o {
            PushOutcome::Created(meta) => meta.version,
            PushOutcome::Unchanged(meta) => {
                panic!("distinct content came back unchanged: {meta:?}")
            }
        })
        .collect();
    numbers.sort_unstable();
    let expected: Vec<i64> = (1..=WRITERS as i64).collect();
    assert_eq!(numbers, expected);

    let prompts = db.open().await.prompts();
    let stored: Vec<i64> = prompts
        .list_versions("p")
        .await
        .unwrap()
        .iter()
        .map(|v| v.meta.version)
        .collect();
    assert_eq!(stored, expected);
    // Each version holds the content its writer pushed.
    for outcome in &outcomes {
        let meta = outcome.meta();
        let version = prompts.get_version("p", meta.version).await.unwrap();
        assert_eq!(version.content, meta.content_hash);
    }
    let latest = prompts.get_by_label("p", LATEST_LABEL).await.unwrap();
    assert_eq!(latest.meta.version, WRITERS as i64);
    // One move per push, each from where the one before left `latest`.
    let history = prompts.label_history("p").await.unwrap();
    let chain: Vec<(Option<i64>, i64)> = history.iter().map(|m| (m.from, m.to)).collect();
    let expected_chain: Vec<(Option<i64>, i64)> = (1..=WRITERS as i64)
        .map(|v| ((v > 1).then_some(v - 1), v))
        .collect();
    assert_eq!(chain, expected_chain);
    assert_eq!(prompts.change_counter().await.unwrap(), WRITERS as i64);
}

/// Every replica pushes `content` to `name` at once.
async fn push_same(
    stores: &[Store],
    name: &'static str,
    content: &'static str,
) -> Vec<PushOutcome> {
    race(stores, |i, store| async move {
        let author = format!("writer {i}");
        let new = NewVersion {
            content,
            content_hash: content,
            author: &author,
            message: None,
        };
        store.prompts().push_version(name, new).await.unwrap()
    })
    .await
}

/// The one `Created` among `outcomes`, which every other outcome must agree with.
fn single_creation(outcomes: &[PushOutcome]) -> VersionMeta {
    let created: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, PushOutcome::Created(_)))
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    let meta = created[0].meta();
    assert!(outcomes.iter().all(|o| o.meta() == meta), "{outcomes:?}");
    meta.clone()
}

async fn concurrent_pushes_of_the_same_content_create_one_version(db: TestDb) {
    let stores = replicas(&db).await;
    // A prompt none of them has seen, so they also race to create it…
    let first = single_creation(&push_same(&stores, "p", "same").await);
    assert_eq!(first.version, 1);
    // …and then one that exists, where nothing but the lock orders them.
    let second = single_creation(&push_same(&stores, "p", "changed").await);
    assert_eq!(second.version, 2);

    let prompts = db.open().await.prompts();
    assert_eq!(prompts.list_versions("p").await.unwrap().len(), 2);
    assert_eq!(prompts.label_history("p").await.unwrap().len(), 2);
    assert_eq!(prompts.list_prompts().await.unwrap().len(), 1);
    assert_eq!(prompts.change_counter().await.unwrap(), 2);
}

async fn concurrent_label_moves_form_one_unbroken_history(db: TestDb) {
    let setup = db.open().await.prompts();
    for i in 1..=WRITERS {
        let content = format!("v{i}");
        let new = NewVersion {
            content: &content,
            content_hash: &content,
            author: "ana",
            message: None,
        };
        setup.push_version("p", new).await.unwrap();
    }
    let stores = replicas(&db).await;
    let outcomes = race(&stores, |i, store| async move {
        let version = i as i64 + 1;
        store
            .prompts()
            .move_label("p", "prod", version, "mover")
            .await
            .unwrap()
    })
    .await;
    assert!(
        outcomes.iter().all(|o| matches!(o, MoveOutcome::Moved(_))),
        "{outcomes:?}"
    );

    let moves: Vec<_> = setup
        .label_history("p")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.cause == MoveCause::Move)
        .collect();
    assert_eq!(moves.len(), WRITERS);
    // Serialised: each move starts where the one committed before it ended.
    assert_eq!(moves[0].from, None);
    assert!(moves.windows(2).all(|w| w[1].from == Some(w[0].to)));
    let mut targets: Vec<i64> = moves.iter().map(|m| m.to).collect();
    targets.sort_unstable();
    assert_eq!(targets, (1..=WRITERS as i64).collect::<Vec<_>>());
    let last = moves.last().map(|m| m.to);
    let prod = setup.get_by_label("p", "prod").await.unwrap();
    assert_eq!(Some(prod.meta.version), last);
}

on_both_backends!(
    concurrent_pushes_of_distinct_contents_get_versions_1_to_16,
    concurrent_pushes_of_the_same_content_create_one_version,
    concurrent_label_moves_form_one_unbroken_history,
);
