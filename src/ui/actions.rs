//! The dashboard's writes: moving a label to a version and rolling a label back. Each is a
//! form post that, on success, redirects (303) to the prompt page with a notice, and on
//! failure shows the prompt page again with the reason and a 4xx status.
//!
//! Must not contain policy (which labels are protected, what `latest` may do): the registry
//! decides, the dashboard only reports.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::auth::Actor;
use super::pages::{auth_on, prompt_name, prompt_page, version_number};
use super::view::UiError;
use crate::prompts::{Label, PromptName};
use crate::server::AppState;
use crate::store::MoveOutcome;

/// Fields are optional so that a missing one gets the dashboard's error page, not axum's
/// plain-text rejection.
#[derive(Debug, Deserialize)]
pub struct MoveForm {
    label: Option<String>,
    version: Option<String>,
    force: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RollbackForm {
    force: Option<String>,
}

/// An HTML checkbox sends its value (`on` unless set) only when ticked.
fn ticked(field: Option<&str>) -> bool {
    matches!(field, Some("on" | "true" | "1" | "yes"))
}

fn label(text: &str) -> Result<Label, UiError> {
    Label::parse(text.trim()).map_err(|e| UiError::bad_request(e.to_string()))
}

pub async fn move_label(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(actor): Extension<Actor>,
    Form(form): Form<MoveForm>,
) -> Response {
    let name = match prompt_name(&name) {
        Ok(name) => name,
        Err(e) => return e.with_auth(auth_on(&state)).into_response(),
    };
    let result = async {
        let label = label(form.label.as_deref().unwrap_or_default())?;
        let version = version_number(form.version.as_deref().unwrap_or_default())?;
        let versions = state.registry.versions(&name).await?;
        if !versions.iter().any(|v| v.meta.version == version) {
            return Err(UiError::not_found(format!(
                "prompt `{}` has no version {version}",
                name.as_str()
            )));
        }
        let force = ticked(form.force.as_deref());
        Ok(state
            .registry
            .move_label(&name, &label, version, &actor.0, force)
            .await?)
    };
    match result.await {
        Ok(MoveOutcome::Moved(m)) => back(&name, "moved", &m.label, m.to),
        Ok(MoveOutcome::Unchanged { label, version }) => back(&name, "unchanged", &label, version),
        Err(e) => failed(&state, &name, e).await,
    }
}

pub async fn rollback(
    State(state): State<AppState>,
    Path((name, label_text)): Path<(String, String)>,
    Extension(actor): Extension<Actor>,
    Form(form): Form<RollbackForm>,
) -> Response {
    let name = match prompt_name(&name) {
        Ok(name) => name,
        Err(e) => return e.with_auth(auth_on(&state)).into_response(),
    };
    let result = async {
        let label = label(&label_text)?;
        let force = ticked(form.force.as_deref());
        Ok::<_, UiError>(
            state
                .registry
                .rollback(&name, &label, &actor.0, force)
                .await?,
        )
    };
    match result.await {
        Ok(MoveOutcome::Moved(m)) => back(&name, "rolled-back", &m.label, m.to),
        Ok(MoveOutcome::Unchanged { label, version }) => back(&name, "unchanged", &label, version),
        Err(e) => failed(&state, &name, e).await,
    }
}

/// Names, labels and versions are URL-safe by their rules, so they go in as they are.
fn back(name: &PromptName, done: &str, label: &str, version: i64) -> Response {
    Redirect::to(&format!(
        "/ui/prompts/{}?done={done}&label={label}&version={version}",
        name.as_str()
    ))
    .into_response()
}

/// A refused action shows on the page it came from, with its status; anything else (the
/// prompt is gone, the store failed) gets the error page.
async fn failed(state: &AppState, name: &PromptName, e: UiError) -> Response {
    let auth = auth_on(state);
    if !e.status.is_client_error() {
        return e.with_auth(auth).into_response();
    }
    match prompt_page(state, name, None, Some((e.status, e.message.clone()))).await {
        Ok(page) => page,
        Err(_) => e.with_auth(auth).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ticked_checkbox_forces() {
        assert!(ticked(Some("on")));
        assert!(!ticked(None));
        assert!(!ticked(Some("")));
        assert!(!ticked(Some("off")));
    }
}
