//! `pasarela eval run`: runs suites in-process (a gateway on a loopback port of this process,
//! with the configured models) or against any OpenAI-compatible URL, prints a summary, writes
//! the reports asked for, and exits 0 (thresholds met), 100 (not met) or 1 (the run failed).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::SecretString;

use super::ConfigSource;
use crate::config::Config;
use crate::evals::{self, Endpoint, ResponseCache, RunOptions, RunReport, Suite};
use crate::prompts::Registry;
use crate::server::Application;
use crate::store::Store;

/// The exit code of a run whose thresholds were not met.
pub const EXIT_THRESHOLD: u8 = 100;

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Run suites and report; exit 0 when every target meets its threshold, 100 when one does
    /// not (or a case regressed, with --fail-on-regression), 1 when the run itself fails.
    Run(RunArgs),
    /// Make a stored run its suite's baseline (`--baseline blessed`).
    Bless(BlessArgs),
    /// Show which cases flipped between two stored runs (A the baseline, B the newer run).
    Compare(CompareArgs),
    /// List stored runs, newest first.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct BlessArgs {
    #[command(flatten)]
    source: ConfigSource,
    #[command(flatten)]
    author: super::prompts::Author,
    /// The run's id (printed by `eval run`, listed by `eval list`).
    run: i64,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// The baseline run.
    a: i64,
    /// The run compared with it.
    b: i64,
    /// Exit 100 when a case that passed in A fails in B.
    #[arg(long)]
    fail_on_regression: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Only this suite's runs (the suite file's name without `.yaml`).
    #[arg(long)]
    suite: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Suite files (YAML).
    #[arg(required = true)]
    suites: Vec<PathBuf>,
    /// Run only the target with this label (repeatable).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// An OpenAI-compatible API to call (`http://host:8000/v1`) instead of an in-process
    /// gateway with the configured models.
    #[arg(long)]
    against: Option<String>,
    /// The API key for `--against`.
    #[arg(long, env = "PASARELA_EVAL_API_KEY", hide_env_values = true)]
    api_key: Option<SecretString>,
    /// Where `similar` embeds and `llm-rubric` asks its judge. Default: the in-process gateway
    /// (started for them when `--against` sends the targets elsewhere).
    #[arg(long)]
    graders: Option<String>,
    /// The API key for `--graders`.
    #[arg(long, env = "PASARELA_EVAL_GRADERS_API_KEY", hide_env_values = true)]
    graders_api_key: Option<SecretString>,
    /// The most calls in flight; lowered for a while whenever the target answers 429.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// A report to write: FORMAT (json, junit, markdown, html) then FILE; repeatable.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"], action = clap::ArgAction::Append)]
    output: Vec<String>,
    /// Call the target for every case even when an identical request's answer is cached.
    #[arg(long)]
    no_cache: bool,
    /// Where answers are cached [default: `eval-cache` in the store's data directory].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Seconds one call may take.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Directory of local model files, overriding `engine.models_dir`.
    #[arg(long, env = "PASARELA_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Compare with a baseline: `blessed` (the suite's blessed run) or a run id.
    #[arg(long)]
    baseline: Option<Baseline>,
    /// Exit 100 when a case that passed in the baseline fails now.
    #[arg(long, requires = "baseline")]
    fail_on_regression: bool,
    /// Do not keep the run in the store.
    #[arg(long)]
    no_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    Blessed,
    Run(i64),
}

impl std::str::FromStr for Baseline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "blessed" => Ok(Baseline::Blessed),
            id => id
                .parse()
                .map(Baseline::Run)
                .map_err(|_| format!("`{id}`: expected `blessed` or a run id")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Junit,
    Markdown,
    Html,
}

fn outputs(pairs: &[String]) -> anyhow::Result<Vec<(Format, PathBuf)>> {
    pairs
        .chunks(2)
        .map(|pair| {
            let [format, file] = pair else {
                bail!("--output takes a format and a file");
            };
            let format = match format.as_str() {
                "json" => Format::Json,
                "junit" => Format::Junit,
                "markdown" | "md" => Format::Markdown,
                "html" => Format::Html,
                other => bail!("--output {other}: expected json, junit, markdown or html"),
            };
            Ok((format, PathBuf::from(file)))
        })
        .collect()
}

pub fn run(command: EvalCommand) -> ExitCode {
    let result = match command {
        EvalCommand::Run(args) => run_suites(args),
        EvalCommand::Bless(args) => bless(args).map(|()| true),
        EvalCommand::Compare(args) => compare_runs(args),
        EvalCommand::List(args) => list(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_THRESHOLD),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` against the configured store, on a small runtime of its own.
fn with_store<T>(
    source: &ConfigSource,
    work: impl AsyncFnOnce(Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let config = source.load()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = Store::open(&config.store)
            .await
            .context("opening the store")?;
        work(store).await
    })
}

/// A stored run's report.
async fn stored_report(store: &Store, id: i64) -> anyhow::Result<RunReport> {
    let (_, json) = store.eval_runs().get(id).await?;
    let mut report: RunReport = serde_json::from_str(&json)
        .with_context(|| format!("eval run {id} holds a report this build cannot read"))?;
    report.run_id = Some(id);
    Ok(report)
}

#[expect(clippy::print_stdout, reason = "the outcome is this command's output")]
fn bless(args: BlessArgs) -> anyhow::Result<()> {
    let by = args.author.resolve();
    let suite = with_store(&args.source, async |store| {
        Ok(store.eval_runs().bless(args.run, &by).await?)
    })?;
    println!("run {} is now the baseline of suite {suite}", args.run);
    Ok(())
}

fn compare_runs(args: CompareArgs) -> anyhow::Result<bool> {
    let (a, b) = with_store(&args.source, async |store| {
        Ok((
            stored_report(&store, args.a).await?,
            stored_report(&store, args.b).await?,
        ))
    })?;
    if a.suite != b.suite {
        bail!(
            "run {} is of suite {} and run {} of suite {}",
            args.a,
            a.suite,
            args.b,
            b.suite
        );
    }
    let comparison = evals::compare(&a, &b);
    print_comparison(&comparison);
    Ok(!args.fail_on_regression || comparison.regressions.is_empty())
}

#[expect(clippy::print_stdout, reason = "the list is this command's output")]
fn list(args: ListArgs) -> anyhow::Result<()> {
    let runs = with_store(&args.source, async |store| {
        Ok(store
            .eval_runs()
            .list(args.suite.as_deref(), args.limit)
            .await?)
    })?;
    for r in runs {
        println!(
            "{:>6}  {}  {:<24} {:<7} {:>8.1} s  {}{}",
            r.id,
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.suite,
            if r.passed { "passed" } else { "failed" },
            r.duration_ms as f64 / 1000.0,
            r.endpoint,
            if r.blessed { "  (baseline)" } else { "" }
        );
    }
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the comparison is this command's output"
)]
fn print_comparison(c: &evals::Comparison) {
    println!("{}", c.summary());
    for k in &c.regressions {
        println!("  REGRESSED {} / {}", k.target, k.case_id);
    }
    for k in &c.fixes {
        println!("  fixed     {} / {}", k.target, k.case_id);
    }
}

/// True when every suite met its thresholds.
fn run_suites(args: RunArgs) -> anyhow::Result<bool> {
    let outputs = outputs(&args.output)?;
    if args.suites.len() > 1 && !outputs.is_empty() {
        bail!("--output needs a single suite (run each suite with its own reports)");
    }
    // Every suite is read before anything runs: a bad file fails the run at once.
    let suites = args
        .suites
        .iter()
        .map(|p| Suite::load(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = args.source.load()?;
    if let Some(dir) = &args.models_dir {
        config.engine.models_dir = dir.clone();
    }
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pasarela-eval")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = Store::open(&config.store)
            .await
            .context("opening the store")?;
        let registry = Registry::new(store, &config.prompts)
            .await
            .context("opening the prompt registry")?;
        let timeout = Duration::from_secs(args.timeout_secs);
        let (endpoint, endpoint_name, gateway) = match &args.against {
            Some(url) => {
                let endpoint = Endpoint::new(url, args.api_key.clone(), timeout)
                    .map_err(anyhow::Error::msg)?;
                endpoint.probe().await.map_err(anyhow::Error::msg)?;
                // Embeddings and verdicts come from this gateway's models, not the target's.
                let gateway = match &args.graders {
                    None if suites.iter().any(Suite::needs_graders) => {
                        Some(InProcess::start(&config).await?)
                    }
                    _ => None,
                };
                (endpoint, url.clone(), gateway)
            }
            None => {
                let gateway = InProcess::start(&config).await?;
                let endpoint = gateway.endpoint(args.api_key.clone(), timeout)?;
                (endpoint, "in-process".to_owned(), Some(gateway))
            }
        };
        let graders = match (&args.graders, &args.against, &gateway) {
            (Some(url), _, _) => {
                let graders = Endpoint::new(url, args.graders_api_key.clone(), timeout)
                    .map_err(anyhow::Error::msg)?;
                graders.probe().await.map_err(anyhow::Error::msg)?;
                Some(graders)
            }
            (None, Some(_), Some(gateway)) => Some(gateway.endpoint(None, timeout)?),
            _ => None,
        };
        let cache_dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.store.data_dir.join("eval-cache"));
        let mut all_passed = true;
        for suite in &suites {
            let options = RunOptions {
                concurrency: usize::from(args.concurrency),
                only_targets: args.targets.clone(),
                cache: (!args.no_cache).then(|| ResponseCache::new(&cache_dir)),
                prices: crate::limits::Prices::new(config.prices.clone()),
                endpoint_name: endpoint_name.clone(),
                graders: graders.clone(),
            };
            let progress = Progress::new(&suite.name);
            let report = evals::run(
                suite,
                &endpoint,
                Some(&registry),
                &options,
                &|done, total| progress.update(done, total),
            )
            .await;
            progress.finish();
            let mut report = report?;
            let runs = registry.store().eval_runs();
            let baseline_id = match args.baseline {
                None => None,
                Some(Baseline::Run(id)) => Some(id),
                Some(Baseline::Blessed) => {
                    let blessed = runs.baseline(&report.suite).await?;
                    if blessed.is_none() {
                        eprintln!(
                            "warning: suite {} has no blessed baseline yet: nothing to compare \
                             (bless a run with `pasarela eval bless RUN`)",
                            report.suite
                        );
                    }
                    blessed
                }
            };
            if let Some(id) = baseline_id {
                let baseline = stored_report(registry.store(), id).await?;
                if baseline.suite != report.suite {
                    bail!(
                        "baseline run {id} is of suite {}, not {}",
                        baseline.suite,
                        report.suite
                    );
                }
                report.baseline = Some(evals::compare(&baseline, &report));
            }
            if !args.no_store {
                report.run_id = Some(store_run(registry.store(), &report).await?);
            }
            print_summary(&report);
            for (format, path) in &outputs {
                write_report(&report, *format, path)?;
            }
            let regressed = report
                .baseline
                .as_ref()
                .is_some_and(|c| !c.regressions.is_empty());
            all_passed &= report.passed && !(args.fail_on_regression && regressed);
        }
        if let Some(gateway) = gateway {
            gateway.stop().await;
        }
        Ok(all_passed)
    })
}

/// A gateway serving the configured models on a loopback port of this process.
pub(super) struct InProcess {
    pub url: String,
    stop: tokio_util::sync::CancellationToken,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    pub async fn start(config: &Config) -> anyhow::Result<InProcess> {
        let mut config = config.clone();
        config.server.listen = ([127, 0, 0, 1], 0).into();
        let app = Application::build(config)
            .await
            .context("starting the in-process gateway")?;
        let url = format!("http://{}", app.local_addr());
        let stop = app.shutdown_token();
        let serving = tokio::spawn(app.run());
        Ok(InProcess { url, stop, serving })
    }

    /// An endpoint for calls to this gateway, cached under `in-process` rather than its port.
    pub fn endpoint(
        &self,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> anyhow::Result<Endpoint> {
        Ok(Endpoint::new(&self.url, api_key, timeout)
            .map_err(anyhow::Error::msg)?
            .with_identity("in-process"))
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.serving.await;
    }
}

/// The label gate (`prompts label … --require-eval SUITE`): runs `suite` in-process with every
/// target that names prompt `name` pinned to `version`, stores the run, prints its summary and
/// returns its report.
pub(super) async fn run_gate(
    config: &Config,
    registry: &Registry,
    suite: &Path,
    name: &crate::prompts::PromptName,
    version: crate::prompts::PromptVersion,
) -> anyhow::Result<RunReport> {
    let mut suite = Suite::load(suite)?;
    let mut pinned = 0;
    for target in &mut suite.targets {
        if let Some(evals::PromptSpec::Registry(reference)) = &mut target.prompt
            && &reference.name == name
        {
            reference.selector = crate::prompts::Selector::Version(version);
            pinned += 1;
        }
    }
    if pinned == 0 {
        bail!(
            "suite {} has no target that calls prompt `{name}` from the registry: it cannot \
             judge a version of it",
            suite.path.display()
        );
    }
    let gateway = InProcess::start(config).await?;
    let endpoint = gateway.endpoint(None, Duration::from_secs(300))?;
    let options = RunOptions {
        concurrency: 8,
        only_targets: Vec::new(),
        cache: Some(ResponseCache::new(
            &config.store.data_dir.join("eval-cache"),
        )),
        prices: crate::limits::Prices::new(config.prices.clone()),
        endpoint_name: "in-process".to_owned(),
        graders: None,
    };
    let progress = Progress::new(&suite.name);
    let report = evals::run(
        &suite,
        &endpoint,
        Some(registry),
        &options,
        &|done, total| progress.update(done, total),
    )
    .await;
    progress.finish();
    gateway.stop().await;
    let mut report = report?;
    report.run_id = Some(store_run(registry.store(), &report).await?);
    print_summary(&report);
    Ok(report)
}

/// Keeps `report` in the store; returns its run id.
async fn store_run(store: &Store, report: &RunReport) -> anyhow::Result<i64> {
    let json = serde_json::to_string(report)?;
    let targets = report
        .targets
        .iter()
        .map(|t| crate::store::EvalTargetRow {
            label: t.label.clone(),
            model: t.model.clone(),
            prompt: t.prompt.as_ref().map(|p| (p.name.clone(), p.version)),
            attempts: i64::try_from(t.attempts).unwrap_or(i64::MAX),
            passed_attempts: i64::try_from(t.passed_attempts).unwrap_or(i64::MAX),
            met_threshold: t.met_threshold,
        })
        .collect();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a run's milliseconds fit an i64"
    )]
    let duration_ms = report.duration_ms.round() as i64;
    let id = store
        .eval_runs()
        .insert(&crate::store::NewEvalRun {
            suite: &report.suite,
            started_at: report.started_at,
            duration_ms,
            endpoint: &report.endpoint,
            passed: report.passed,
            report: &json,
            targets,
        })
        .await
        .context("storing the run")?;
    Ok(id)
}

fn init_logging() {
    // Warnings only, on stderr: stdout carries the summary. The in-process gateway's warning
    // that it has no API keys is not news on a loopback port only this process calls.
    let filter = std::env::var("PASARELA_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new("warn,pasarela::server::application=error")
        });
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn write_report(report: &RunReport, format: Format, path: &Path) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(report)?,
        Format::Junit => evals::junit::render(report)?,
        Format::Markdown => evals::markdown::render(report),
        Format::Html => evals::html::render(report),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[expect(clippy::print_stdout, reason = "the summary is this command's output")]
fn print_summary(report: &RunReport) {
    let stored = report
        .run_id
        .map(|id| format!(", stored as run {id}"))
        .unwrap_or_default();
    println!(
        "suite {} ({}): {} in {:.1} s{stored}",
        report.suite,
        report.endpoint,
        if report.passed { "passed" } else { "FAILED" },
        report.duration_ms / 1000.0
    );
    for t in &report.targets {
        let prompt = t
            .prompt
            .as_ref()
            .map(|p| format!(" prompt {}#{}", p.name, p.version))
            .unwrap_or_default();
        let k = match report.repeat {
            1 => String::new(),
            k => format!(" pass@{k} {:.2} pass^{k} {:.2}", t.pass_at_k, t.pass_all_k),
        };
        println!(
            "  {} [{}{}]: pass rate {:.1}% (threshold {:.1}%){k}, {} errors, {} cached, p50 {:.0} ms, ${:.6} {}",
            t.label,
            t.model,
            prompt,
            t.pass_rate * 100.0,
            t.threshold * 100.0,
            t.errors,
            t.cached,
            t.latency_p50_ms,
            t.cost_usd,
            if t.met_threshold {
                "ok"
            } else {
                "BELOW THRESHOLD"
            }
        );
    }
    for r in report.results.iter().filter(|r| !r.passed) {
        let why = r.failure();
        println!(
            "  FAIL {} / {} #{}: {why}",
            r.target,
            r.case_id,
            r.repeat + 1
        );
    }
    if let Some(comparison) = &report.baseline {
        print_comparison(comparison);
    }
}

/// A progress bar on a terminal; in CI (no terminal) a line at every tenth of the run.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    suite: String,
    last_tenth: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(suite: &str) -> Progress {
        let terminal = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(suite.to_owned());
            bar
        });
        Progress {
            bar,
            suite: suite.to_owned(),
            last_tenth: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn update(&self, done: usize, total: usize) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            None => {
                let tenth = done * 10 / total.max(1);
                let last = self
                    .last_tenth
                    .swap(tenth, std::sync::atomic::Ordering::Relaxed);
                if tenth > last || done == total {
                    let _ = writeln!(std::io::stderr(), "eval {}: {done}/{total}", self.suite);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
