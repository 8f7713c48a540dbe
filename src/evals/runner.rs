//! Running a suite: every case on every target, `repeat` times, through an OpenAI-compatible
//! endpoint, with as many calls in flight as the target accepts (see `pace.rs`); then each
//! answer scored by the suite's assertions and the results summed up per target.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::assertion::{GradeContext, Graders, Output};
use super::client::{Answer, Endpoint, ResponseCache};
use super::pace::Pace;
use super::report::{self, CaseResult, PromptUsed, RunReport};
use super::suite::{Case, PromptSpec, Suite, Target};
use crate::limits::Prices;
use crate::prompts::{
    ContentParts, PromptContent, Registry, VariableName, VariableSpec, VariableType, render,
};
use crate::telemetry::TokenCounts;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("target `{target}`: {reason}")]
    Target { target: String, reason: String },
    #[error("--target {0}: the suite has no target with this label")]
    UnknownTarget(String),
}

/// How a run goes.
pub struct RunOptions {
    /// The most calls in flight.
    pub concurrency: usize,
    /// Run only the targets with these labels (all when empty).
    pub only_targets: Vec<String>,
    /// None with `--no-cache`. Repeated suites never use it.
    pub cache: Option<ResponseCache>,
    pub prices: Prices,
    /// How the report names the endpoint (`in-process` or the URL).
    pub endpoint_name: String,
    /// Where `similar` embeds and `llm-rubric` asks its judge, when not the targets' endpoint.
    pub graders: Option<Endpoint>,
}

/// A target ready to call: its model, where its messages come from.
struct Ready<'a> {
    target: &'a Target,
    model: String,
    prompt: Option<PromptUsed>,
    /// The prompt's content; None for an inline prompt that declares no variables (built per
    /// case from the case's vars) or for a target without a prompt.
    content: Option<PromptContent>,
    /// Which messages a per-case prompt has.
    inline: Option<&'a super::suite::InlinePrompt>,
}

/// Runs `suite` against `endpoint`; `registry` resolves registry prompts. `progress` is told
/// after each attempt how many of how many are done.
pub async fn run(
    suite: &Suite,
    endpoint: &Endpoint,
    registry: Option<&Registry>,
    options: &RunOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<RunReport, RunError> {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    for wanted in &options.only_targets {
        if !suite.targets.iter().any(|t| &t.label == wanted) {
            return Err(RunError::UnknownTarget(wanted.clone()));
        }
    }
    let mut ready = Vec::new();
    for target in suite
        .targets
        .iter()
        .filter(|t| options.only_targets.is_empty() || options.only_targets.contains(&t.label))
    {
        ready.push(prepare(target, registry).await?);
    }

    let pace = Pace::new(options.concurrency);
    // Repeats must be independent draws: a cached answer would repeat itself.
    let cache = options.cache.as_ref().filter(|_| suite.repeat == 1);
    // Graders have a pace of their own: a judge's 429s say nothing about the target's rate.
    let grader_pace = Pace::new(options.concurrency);
    let graders = match &options.graders {
        Some(graders) => EndpointGraders {
            endpoint: graders,
            pace: &grader_pace,
            cache,
        },
        None => EndpointGraders {
            endpoint,
            pace: &pace,
            cache,
        },
    };
    let ctx = GradeContext {
        graders: &graders,
        embedding_model: &suite.embedding_model,
        judge_model: suite.judge.as_deref().unwrap_or(""),
    };
    let jobs: Vec<(usize, usize, u32)> = (0..ready.len())
        .flat_map(|t| {
            (0..suite.cases.len()).flat_map(move |c| (0..suite.repeat).map(move |r| (t, c, r)))
        })
        .collect();
    let total = jobs.len();
    let mut done = 0;
    let mut results: Vec<((usize, usize, u32), CaseResult)> = Vec::with_capacity(total);
    let mut attempts = futures::stream::iter(jobs)
        .map(|(t, c, r)| {
            let (ready, case) = (&ready[t], &suite.cases[c]);
            let (endpoint, pace, ctx) = (endpoint, &pace, &ctx);
            async move {
                let result = attempt(
                    suite,
                    ready,
                    case,
                    r,
                    endpoint,
                    pace,
                    cache,
                    ctx,
                    &options.prices,
                )
                .await;
                ((t, c, r), result)
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    while let Some(item) = attempts.next().await {
        results.push(item);
        done += 1;
        progress(done, total);
    }
    drop(attempts);
    results.sort_by_key(|(key, _)| *key);
    let results: Vec<CaseResult> = results.into_iter().map(|(_, r)| r).collect();

    let targets: Vec<_> = ready
        .iter()
        .map(|r| {
            let mine: Vec<&CaseResult> = results
                .iter()
                .filter(|x| x.target == r.target.label)
                .collect();
            report::summarize(
                &r.target.label,
                &r.model,
                r.prompt.clone(),
                &mine,
                suite.repeat,
                r.target.threshold.unwrap_or(suite.threshold),
            )
        })
        .collect();
    let passed = targets.iter().all(|t| t.met_threshold);
    Ok(RunReport {
        run_id: None,
        suite: suite.name.clone(),
        suite_path: suite.path.display().to_string(),
        endpoint: options.endpoint_name.clone(),
        started_at,
        duration_ms: clock.elapsed().as_secs_f64() * 1000.0,
        threshold: suite.threshold,
        repeat: suite.repeat,
        concurrency: options.concurrency,
        lowest_concurrency: pace.limits().1,
        targets,
        results,
        passed,
        baseline: None,
    })
}

async fn prepare<'a>(
    target: &'a Target,
    registry: Option<&Registry>,
) -> Result<Ready<'a>, RunError> {
    let fail = |reason: String| RunError::Target {
        target: target.label.clone(),
        reason,
    };
    let (content, prompt, inline) = match &target.prompt {
        None => (None, None, None),
        Some(PromptSpec::Registry(reference)) => {
            let registry =
                registry.ok_or_else(|| fail("no prompt registry to resolve it in".into()))?;
            let resolved = registry
                .resolve(reference)
                .await
                .map_err(|e| fail(format!("prompt `{reference}`: {e}")))?;
            let used = PromptUsed {
                name: resolved.name.to_string(),
                version: resolved.version,
            };
            (Some(resolved.content.clone()), Some(used), None)
        }
        Some(PromptSpec::File(content)) => (Some(content.as_ref().clone()), None, None),
        Some(PromptSpec::Inline(inline)) => match &inline.variables {
            Some(variables) => {
                let content = PromptContent::new(ContentParts {
                    messages: inline.messages.clone(),
                    variables: variables.clone(),
                    ..ContentParts::default()
                })
                .map_err(|e| fail(format!("inline prompt: {e}")))?;
                (Some(content), None, None)
            }
            None => (None, None, Some(inline)),
        },
    };
    let model = target
        .model
        .clone()
        .or_else(|| content.as_ref().and_then(|c| c.model().map(str::to_owned)))
        .ok_or_else(|| fail("neither the target nor its prompt names a model".into()))?;
    Ok(Ready {
        target,
        model,
        prompt,
        content,
        inline,
    })
}

/// The chat request for one case: the prompt's messages and parameters, the target's
/// parameters over them.
fn request(ready: &Ready<'_>, case: &Case) -> Result<Value, String> {
    let per_case;
    let content = match (&ready.content, ready.inline) {
        (Some(content), _) => Some(content),
        (None, Some(inline)) => {
            // Every var the case passes is declared, of any type.
            let mut variables = BTreeMap::new();
            for name in case.vars.keys() {
                let name = VariableName::parse(name).map_err(|e| format!("vars: {e}"))?;
                let spec = VariableSpec {
                    kind: VariableType::Any,
                    default: None,
                    description: None,
                };
                variables.insert(name, spec);
            }
            per_case = PromptContent::new(ContentParts {
                messages: inline.messages.clone(),
                variables,
                ..ContentParts::default()
            })
            .map_err(|e| format!("inline prompt: {e}"))?;
            Some(&per_case)
        }
        (None, None) => None,
    };
    let mut body = Map::new();
    match content {
        Some(content) => {
            let rendered = render(content, &case.vars).map_err(|e| format!("prompt: {e}"))?;
            body.extend(rendered.parameters);
            body.insert("messages".into(), json!(rendered.messages));
        }
        None => {
            // No prompt: the case's `vars.messages`, else its `vars.input` as one user message.
            let messages = match (case.vars.get("messages"), case.vars.get("input")) {
                (Some(messages), _) => messages.clone(),
                (None, Some(Value::String(input))) => json!([{"role": "user", "content": input}]),
                _ => {
                    return Err(
                        "a target without a prompt needs `vars.messages` or `vars.input`".into(),
                    );
                }
            };
            body.insert("messages".into(), messages);
        }
    }
    body.extend(ready.target.params.clone());
    body.insert("model".into(), Value::String(ready.model.clone()));
    body.remove("stream");
    Ok(Value::Object(body))
}

/// The text and figures of a chat completion.
fn output_of(answer: &Answer, model: &str, prices: &Prices) -> Output {
    let choice = answer.body.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        // A tool call is the answer when there is no text.
        _ => message
            .and_then(|m| m.get("tool_calls"))
            .map(Value::to_string)
            .unwrap_or_default(),
    };
    let usage = |key: &str| {
        answer
            .body
            .pointer(&format!("/usage/{key}"))
            .and_then(Value::as_u64)
    };
    let tokens = TokenCounts {
        input: usage("prompt_tokens").unwrap_or(0),
        output: usage("completion_tokens").unwrap_or(0),
    };
    let cost = prices
        .cost(answer.deployment.as_deref(), Some(model), tokens)
        .map(|micro| micro as f64 / 1e6);
    Output {
        text,
        latency_ms: answer.latency_ms,
        completion_tokens: usage("completion_tokens"),
        cost_usd: cost,
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one attempt needs the whole run's context"
)]
async fn attempt(
    suite: &Suite,
    ready: &Ready<'_>,
    case: &Case,
    repeat: u32,
    endpoint: &Endpoint,
    pace: &Pace,
    cache: Option<&ResponseCache>,
    ctx: &GradeContext<'_>,
    prices: &Prices,
) -> CaseResult {
    let mut result = CaseResult {
        target: ready.target.label.clone(),
        case_id: case.id.clone(),
        description: case.description.clone(),
        repeat,
        vars: case.vars.clone(),
        output: None,
        error: None,
        verdicts: Vec::new(),
        score: 0.0,
        threshold: case.threshold,
        passed: false,
        latency_ms: 0.0,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: None,
        finish_reason: None,
        cached: false,
    };
    let body = match request(ready, case) {
        Ok(body) => body,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    const PATH: &str = "/chat/completions";
    let answer = match cache.and_then(|c| c.get(endpoint, PATH, &body)) {
        Some(hit) => {
            result.cached = true;
            hit
        }
        None => match endpoint.post(PATH, &body, pace).await {
            Ok(answer) => {
                if let Some(cache) = cache {
                    cache.put(endpoint, PATH, &body, &answer);
                }
                answer
            }
            Err(e) => {
                result.error = Some(e);
                return result;
            }
        },
    };
    let output = output_of(&answer, &ready.model, prices);
    let mut verdicts = Vec::new();
    for assertion in suite.assertions_for(case) {
        verdicts.push(
            assertion
                .verdict(&output, case.expected.as_ref(), ctx)
                .await,
        );
    }
    result.score = report::score(&verdicts);
    result.passed = result.score >= case.threshold;
    result.verdicts = verdicts;
    result.latency_ms = output.latency_ms;
    result.prompt_tokens = answer
        .body
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    result.completion_tokens = output.completion_tokens.unwrap_or(0);
    result.cost_usd = output.cost_usd;
    result.finish_reason = output.finish_reason;
    result.output = Some(output.text);
    result
}

/// The judge and the embedder, reached through the run's endpoint.
struct EndpointGraders<'a> {
    endpoint: &'a Endpoint,
    pace: &'a Pace,
    cache: Option<&'a ResponseCache>,
}

impl EndpointGraders<'_> {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        if let Some(hit) = self.cache.and_then(|c| c.get(self.endpoint, path, body)) {
            return Ok(hit.body);
        }
        let answer = self.endpoint.post(path, body, self.pace).await?;
        if let Some(cache) = self.cache {
            cache.put(self.endpoint, path, body, &answer);
        }
        Ok(answer.body)
    }
}

#[async_trait::async_trait]
impl Graders for EndpointGraders<'_> {
    async fn embed(&self, model: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let body = self
            .post("/embeddings", &json!({"model": model, "input": texts}))
            .await?;
        let data = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or("the embeddings answer has no `data`")?;
        let mut vectors = vec![Vec::new(); texts.len()];
        for item in data {
            let index = item.get("index").and_then(Value::as_u64).unwrap_or(0);
            let vector: Vec<f32> = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or("an embedding is not a list of numbers")?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()
                .ok_or("an embedding is not a list of numbers")?;
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| vectors.get_mut(i))
                .ok_or("an embedding's index is out of range")?;
            *slot = vector;
        }
        Ok(vectors)
    }

    async fn judge(&self, model: &str, prompt: &str) -> Result<String, String> {
        let body = json!({
            "model": model,
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}],
        });
        let answer = self.post("/chat/completions", &body).await?;
        answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "the judge's answer has no text".to_owned())
    }
}
