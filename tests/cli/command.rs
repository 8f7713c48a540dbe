//! [`TestCli`]: a working directory for one test and the binary run in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Recorded as the author unless a test says otherwise, so histories are predictable.
pub const AUTHOR: &str = "test-author";

pub struct TestCli {
    dir: TempDir,
    env: Vec<(String, String)>,
}

/// One run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl TestCli {
    /// A fresh directory holding `pasarela.toml` and a copy of the shipped prompts. The config
    /// names a local model whose file does not exist: `prompts` commands must never load one.
    pub fn new() -> TestCli {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = format!(
            "[models.not-downloaded]\nkind = \"chat\"\npath = \"absent.gguf\"\n\n\
             [store]\ndata_dir = {data:?}\n\n[prompts]\ndir = {prompts:?}\n",
            data = dir.path().join("data"),
            prompts = dir.path().join("prompts"),
        );
        std::fs::write(dir.path().join("pasarela.toml"), config).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let copy = dir.path().join("prompts");
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
        TestCli {
            dir,
            env: vec![("PASARELA_AUTHOR".into(), AUTHOR.into())],
        }
    }

    /// Sets (or with `None` removes) an environment variable for every later run.
    pub fn env(mut self, key: &str, value: Option<&str>) -> TestCli {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.into(), value.into()));
        }
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn prompts_dir(&self) -> PathBuf {
        self.dir.path().join("prompts")
    }

    pub fn prompt_file(&self, file: &str) -> PathBuf {
        self.prompts_dir().join(file)
    }

    /// Replaces `from` by `to` in a prompt file, failing if `from` is not there.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.prompt_file(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// `pasarela prompts ARGS…` in this directory, with only the environment this test set.
    pub fn prompts(&self, args: &[&str]) -> Run {
        self.run("prompts", args)
    }

    /// `pasarela keys ARGS…`, like [`TestCli::prompts`].
    pub fn keys(&self, args: &[&str]) -> Run {
        self.run("keys", args)
    }

    /// `pasarela eval ARGS…`, like [`TestCli::prompts`].
    pub fn eval(&self, args: &[&str]) -> Run {
        self.run("eval", args)
    }

    /// `pasarela logs ARGS…`, like [`TestCli::prompts`].
    pub fn logs(&self, args: &[&str]) -> Run {
        self.run("logs", args)
    }

    fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pasarela"));
        command
            .arg(subcommand)
            .args(args)
            .current_dir(self.dir.path());
        for key in [
            "PASARELA_CONFIG",
            "PASARELA_DATA_DIR",
            "PASARELA_DATABASE_URL",
            "PASARELA_AUTHOR",
        ] {
            command.env_remove(key);
        }
        command.env("PASARELA_CONFIG", self.dir.path().join("pasarela.toml"));
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().expect("the binary runs");
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }

    /// Runs and expects exit code 0; returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.prompts(args);
        assert_eq!(
            run.code,
            Some(0),
            "prompts {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Runs and expects exit code 1 with one `error: …` line; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let run = self.prompts(args);
        assert_eq!(
            run.code,
            Some(1),
            "prompts {args:?} should fail\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.starts_with("error: ") && run.stderr.lines().count() == 1,
            "one error line expected: {}",
            run.stderr
        );
        run.stderr.trim_end().to_owned()
    }
}
