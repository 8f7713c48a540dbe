//! Eval suites: the suite format, assertions and their scores, the runner (concurrency that
//! adapts to 429s, a response cache, repeats), the reports (JSON, JUnit, Markdown, HTML) and
//! the comparison of a run with a baseline.
//!
//! Must not contain HTTP serving or CLI parsing: the runner calls an OpenAI-compatible
//! endpoint (an in-process gateway the CLI starts, or any URL) through `client.rs`.
//!
//! # Suite format (YAML, in `evals/`; `evals/README.md` says the same for suite authors)
//!
//! ```yaml
//! description: Greeting prompt, production label   # optional
//! targets:                       # one or more, compared side by side
//!   - label: greeting-prod       # optional; how reports name it
//!     prompt: greeting@production  # registry: name, name@label, name#3
//!     model: smollm2-135m-instruct # optional when the prompt names one
//!     params: { temperature: 0 }   # optional OpenAI fields over the prompt's
//!     threshold: 0.9               # optional: this target's pass rate, not the suite's
//!   - model: smollm2-135m-instruct
//!     prompt:                      # inline; or `prompt: { file: ../prompts/x.md }`
//!       messages:
//!         - { role: user, content: "Say hello to {{ name }}." }
//! dataset:                       # inline cases, or the path of a JSONL file of them
//!   - id: alice                  # optional (case-N)
//!     vars: { name: Alice }
//!     expected: Hello Alice      # optional: the value of assertions that have none
//!     metadata: { lang: en }     # optional, kept in the results
//!     assert:                    # the case's own assertions
//!       - { type: icontains, value: alice }
//!     threshold: 1.0             # optional: the weighted score the case needs
//! default_assertions:            # applied to every case
//!   - { type: not-contains, value: "As an AI", weight: 0.5 }
//! threshold: 0.8                 # optional: the pass rate each target needs (default 1)
//! repeat: 3                      # optional: attempts per case (pass@k and pass^k)
//! judge: smollm2-135m-instruct   # the model llm-rubric asks, unless it names one
//! embedding_model: all-minilm-l6-v2  # what `similar` embeds with (this is the default)
//! ```
//!
//! A target without a prompt sends the case's `vars.messages`, or `vars.input` as one user
//! message. An inline prompt without `variables` declares each case's vars as it comes.
//!
//! Assertions (`type`, then `value`, `threshold`, `weight` (default 1), `model`): `equals`,
//! `contains`, `icontains`, `contains-any`, `contains-all`, `starts-with`, `regex`, `is-json`,
//! `json-schema`, `similar` (cosine ≥ threshold, default 0.8), `llm-rubric` (the judge must
//! return a verdict; none is a failure), `rouge-l` (default 0.5), `bleu` (default 0.3),
//! `latency` (ms), `cost` (US dollars), `max-tokens` (completion tokens), `finish-reason`.
//! Each may be negated with `not-`; a check that cannot be made (the judge failed, the model
//! has no price) fails either way.

mod assertion;
mod client;
mod compare;
pub mod html;
pub mod junit;
pub mod markdown;
mod pace;
mod report;
mod runner;
mod suite;
pub mod text_metrics;

pub use assertion::{Assertion, Check, Output, Verdict, parse_judgement};
pub use client::{Endpoint, ResponseCache};
pub use compare::{CaseKey, Comparison, compare};
pub use report::{CaseResult, PromptUsed, RunReport, TargetSummary};
pub use runner::{RunError, RunOptions, run};
pub use suite::{Case, PromptSpec, Suite, SuiteError, Target};

#[cfg(test)]
mod tests;
