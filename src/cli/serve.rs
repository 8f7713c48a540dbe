//! `pasarela serve`

use std::net::SocketAddr;

use anyhow::Context;

use super::ConfigSource;
use crate::config::LogFormat;
use crate::server::Application;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Address to listen on, overriding `server.listen`.
    #[arg(long, env = "PASARELA_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of local model files, overriding `engine.models_dir`.
    #[arg(long, env = "PASARELA_MODELS_DIR")]
    models_dir: Option<std::path::PathBuf>,
    /// Log format, overriding `telemetry.log_format`.
    #[arg(long, env = "PASARELA_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.source.load()?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.models_dir {
        config.engine.models_dir = dir;
    }
    match args.log_format.as_deref() {
        Some("json") => config.telemetry.log_format = LogFormat::Json,
        Some(_) => config.telemetry.log_format = LogFormat::Text,
        None => {}
    }
    crate::telemetry::init_logging(&config.telemetry);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pasarela-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        tracing::info!(config = %config.origin, "starting pasarela");
        let app = Application::build(config).await?;
        let token = app.shutdown_token();
        tokio::spawn(async move {
            shutdown_signal().await;
            token.cancel();
        });
        app.run().await.context("serving")
    })
}

/// Ctrl-C or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
