//! A real `pasarela serve` process for the tests that need one: killed without warning, or
//! run twice as replicas. It listens on a port of its own choosing and says where in its JSON
//! log; every log line is kept for the test to look at.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: Arc<Mutex<Vec<Value>>>,
}

impl GatewayProcess {
    /// Starts `pasarela serve` with `config` over the SQLite store in `data` and `env` on top
    /// of the test's environment, and waits until it listens.
    pub async fn start(config: &Path, data: &Path, env: &[(&str, &str)]) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pasarela"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            // The test's environment must not pick another store or Redis.
            .env_remove("PASARELA_DATABASE_URL")
            .env_remove("PASARELA_REDIS_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let listening = entry["fields"]["message"] == "pasarela is listening";
                let addr = entry["fields"]["addr"].as_str().map(str::to_owned);
                log.lock().unwrap().push(entry);
                if listening {
                    return addr.unwrap();
                }
            }
            panic!("the gateway exited before listening");
        })
        .await
        .expect("the gateway listens within 60 s");
        // The rest of the log is kept as it comes, so that a full pipe never blocks it.
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    kept.lock().unwrap().push(entry);
                }
            }
        });
        GatewayProcess {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no graceful shutdown.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits up to `within` until `times` log entries at `level` have a message containing
    /// `text`; returns the last of them.
    pub async fn logged(&self, level: &str, text: &str, times: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<Value> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["level"] == level
                        && e["fields"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(text))
                })
                .cloned()
                .collect();
            if found.len() >= times {
                return found[times - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {times} {level} log lines containing `{text}` within {within:?}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of one sample on `/metrics` (a name with its labels, as Prometheus writes
    /// it), or None when it is not there.
    pub async fn metric(&self, client: &reqwest::Client, sample: &str) -> Option<f64> {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().unwrap())
        })
    }
}
