//! Deployment, exercised without Docker (no engine runs here or in CI): the image's `CMD` and
//! `HEALTHCHECK` lines, parsed from the `Dockerfile`, run with `/bin/sh` in a directory laid out
//! as the image's file system, against a fresh database; the compose file is validated against
//! the Compose Specification's JSON schema (`scripts/check-compose`, the schema kept in
//! `deploy/compose-spec.json`) and its Faceoff services' commands and health checks run the
//! same way; and a database filled through the app is dumped with `pg_dump` and restored by
//! `scripts/restore-db`, which checks the ledger.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use faceoff::{config::Config, jobs, server::SHUTDOWN_BOUND};
use reqwest::{StatusCode, multipart};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    Browser, TestApp, TestDb, assert_ledger_invariants, location, migrated_db, settled_within, test_config,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The binary the image's build stage makes (`cargo build --bin faceoff`), built for the tests.
const BIN: &str = env!("CARGO_BIN_EXE_faceoff");

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile, read as Docker reads it.

/// One instruction: its keyword (upper case) and its arguments, continuation lines joined and
/// comment lines dropped (also inside a continued instruction, as Docker does).
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(continued) = line.trim_end().strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let whole = std::mem::take(&mut current);
        let whole = whole.trim();
        if whole.is_empty() {
            continue;
        }
        let (keyword, args) = whole.split_once(char::is_whitespace).unwrap_or((whole, ""));
        out.push(Instruction { keyword: keyword.to_ascii_uppercase(), args: args.trim().to_string() });
    }
    out
}

/// The stages of a Dockerfile, each from its `FROM` on.
fn stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions(text) {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction);
        }
    }
    stages
}

/// Splits like a shell: whitespace separates words, quotes group, a backslash escapes.
fn shell_words(text: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    word.push(q);
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// A command as Docker runs it: the exec form `["a", "b"]` as those words, the shell form
/// through `/bin/sh -c`.
fn command_words(args: &str) -> Vec<String> {
    if args.trim_start().starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form {args}: {e}"))
    } else {
        vec!["/bin/sh".into(), "-c".into(), args.into()]
    }
}

/// The words as a `/bin/sh` command line that runs them as Docker does: the program replaces
/// the shell (and so gets the signals).
fn shell_line(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{}'", w.replace('\'', r"'\''"))).collect();
    format!("exec {}", quoted.join(" "))
}

/// A duration as Docker and Compose write them: `10s`, `1m30s`, `500ms`, `1h`.
fn go_duration(text: &str) -> Duration {
    let (mut total, mut number) = (Duration::ZERO, String::new());
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let value: f64 = number.parse().unwrap_or_else(|_| panic!("duration {text}"));
        number.clear();
        let seconds = match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            other => panic!("duration {text}: unit {other}"),
        };
        total += Duration::from_secs_f64(value * seconds);
    }
    assert!(number.is_empty(), "duration {text} has no unit");
    total
}

/// A health check: the command, and how long Docker lets it take and waits for a first success.
#[derive(Debug, Clone)]
struct HealthCheck {
    words: Vec<String>,
    timeout: Duration,
    start_period: Duration,
}

fn dockerfile_healthcheck(args: &str) -> HealthCheck {
    let mut options = BTreeMap::new();
    let mut rest = args.trim();
    while let Some(option) = rest.strip_prefix("--") {
        let (option, tail) = option.split_once(char::is_whitespace).unwrap_or((option, ""));
        let (name, value) = option.split_once('=').unwrap_or_else(|| panic!("HEALTHCHECK option --{option}"));
        options.insert(name.to_string(), value.to_string());
        rest = tail.trim_start();
    }
    let command = rest.strip_prefix("CMD").unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {args}"));
    HealthCheck {
        words: command_words(command.trim()),
        // Docker's defaults.
        timeout: options.get("timeout").map_or(Duration::from_secs(30), |v| go_duration(v)),
        start_period: options.get("start-period").map_or(Duration::ZERO, |v| go_duration(v)),
    }
}

/// The image's runtime stage, laid out under a temporary directory that stands for the
/// container's root: its `WORKDIR`, the files its `COPY --from=build` lines bring (from this
/// repository, as the build stage's `COPY . .` does, and the test build of the binary for
/// `target/release/faceoff`), its `VOLUME`s, its `ENV` (paths moved under the root), `USER`,
/// `CMD` and `HEALTHCHECK`. `RUN` lines (apt, useradd) are not run.
struct Image {
    root: tempfile_dir::TempDir,
    workdir: String,
    env: Vec<(String, String)>,
    cmd: Vec<String>,
    healthcheck: Option<HealthCheck>,
    user: Option<String>,
    volumes: Vec<String>,
    exposed: Vec<String>,
    build_stage: Vec<Instruction>,
}

impl Image {
    fn from_dockerfile(text: &str) -> Image {
        let stages = stages(text);
        assert!(stages.len() >= 2, "a build stage and a runtime stage");
        let build_stage = stages[0].clone();
        let build_dir = build_stage
            .iter()
            .filter(|i| i.keyword == "WORKDIR")
            .map(|i| i.args.clone())
            .next_back()
            .unwrap_or_else(|| "/".into());
        let runtime = stages.last().expect("runtime stage").clone();
        let root = tempfile_dir::TempDir::new("faceoff-image");
        let mut image = Image {
            root,
            workdir: "/".into(),
            env: Vec::new(),
            cmd: Vec::new(),
            healthcheck: None,
            user: None,
            volumes: Vec::new(),
            exposed: Vec::new(),
            build_stage,
        };
        std::fs::create_dir_all(image.host("/tmp")).expect("tmp");
        std::fs::create_dir_all(image.host("/usr/local/bin")).expect("bin");
        for instruction in runtime {
            let args = instruction.args.as_str();
            match instruction.keyword.as_str() {
                "WORKDIR" => {
                    image.workdir = image.container_path(args);
                    std::fs::create_dir_all(image.host(&image.workdir)).expect("workdir");
                }
                "COPY" => {
                    let words = shell_words(args);
                    assert!(words[0].starts_with("--from="), "runtime COPY from the build stage: {args}");
                    let (source, dest) = (&words[1], &words[2]);
                    let relative = source
                        .strip_prefix(&build_dir)
                        .map(|s| s.trim_start_matches('/'))
                        .unwrap_or_else(|| panic!("COPY source {source} outside the build directory {build_dir}"));
                    let dest = image.host(&image.container_path(dest));
                    if relative == "target/release/faceoff" {
                        std::os::unix::fs::symlink(BIN, &dest).expect("binary");
                    } else {
                        copy_tree(&Path::new(REPO).join(relative), &dest);
                    }
                }
                "ENV" => {
                    let words = shell_words(args);
                    let pairs: Vec<(String, String)> = if words.first().is_some_and(|w| !w.contains('=')) {
                        vec![(words[0].clone(), words[1..].join(" "))]
                    } else {
                        words
                            .iter()
                            .map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).expect("ENV K=V"))
                            .collect()
                    };
                    image.env.extend(pairs);
                }
                "VOLUME" => {
                    let volumes = if args.starts_with('[') { command_words(args) } else { shell_words(args) };
                    for volume in volumes {
                        std::fs::create_dir_all(image.host(&volume)).expect("volume");
                        image.volumes.push(volume);
                    }
                }
                "EXPOSE" => image.exposed.extend(shell_words(args)),
                "USER" => image.user = Some(args.to_string()),
                "CMD" => image.cmd = command_words(args),
                "HEALTHCHECK" => image.healthcheck = Some(dockerfile_healthcheck(args)),
                _ => {}
            }
        }
        image
    }

    fn container_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.trim_end_matches('/').to_string()
        } else {
            let relative = path.trim_start_matches("./").trim_end_matches('/');
            if relative.is_empty() || relative == "." {
                self.workdir.clone()
            } else {
                format!("{}/{relative}", self.workdir.trim_end_matches('/'))
            }
        }
    }

    /// Where a path of the container lies here.
    fn host(&self, container_path: &str) -> PathBuf {
        self.root.path().join(container_path.trim_start_matches('/'))
    }

    /// The environment of a process in the container: `PATH` finds the image's binaries first
    /// (then this machine's `/bin/sh` and friends), `HOME` and `TMPDIR` lie inside the image,
    /// then the image's `ENV` (absolute paths moved under the root), then `extra` (what
    /// `docker run -e` or a compose file sets) and `overrides` (this test's database and ports).
    fn environment(&self, extra: &[(String, String)], overrides: &[(&str, String)]) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let path = format!("{}:{}", self.host("/usr/local/bin").display(), std::env::var("PATH").unwrap_or_default());
        env.insert("PATH".to_string(), path);
        env.insert("HOME".to_string(), self.host(&self.workdir).display().to_string());
        env.insert("TMPDIR".to_string(), self.host("/tmp").display().to_string());
        for (name, value) in self.env.iter().chain(extra) {
            let value = if value.starts_with('/') { self.host(value).display().to_string() } else { value.clone() };
            env.insert(name.clone(), value);
        }
        for (name, value) in overrides {
            env.insert(name.to_string(), value.clone());
        }
        env
    }

    /// Starts `words` with `/bin/sh` in the image's working directory, with only the given
    /// environment; its output goes to a log file outside the image.
    fn start(&self, name: &str, words: &[String], env: &BTreeMap<String, String>) -> Process {
        let log = std::env::temp_dir().join(format!("faceoff-deploy-{}-{}.log", std::process::id(), Uuid::new_v4()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(shell_line(words))
            .current_dir(self.host(&self.workdir))
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process { name: name.to_string(), line: shell_line(words), child, log }
    }

    /// Runs `words` to completion (killed after `timeout`).
    async fn run(&self, name: &str, words: &[String], env: &BTreeMap<String, String>, timeout: Duration) -> Outcome {
        let mut process = self.start(name, words, env);
        let code = match tokio::time::timeout(timeout, process.child.wait()).await {
            Ok(status) => status.expect("wait").code(),
            Err(_) => None,
        };
        Outcome { line: process.line.clone(), code, output: process.output() }
    }

    /// Every file of the image outside its volumes, with its size and modification time.
    fn snapshot(&self) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        let volumes: Vec<PathBuf> = self.volumes.iter().map(|v| self.host(v)).collect();
        let mut files = BTreeMap::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let path = entry.path();
                if volumes.contains(&path) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).expect("metadata");
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                files.insert(path, (meta.len(), meta.modified().expect("mtime")));
            }
        }
        files
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A temporary directory removed on drop (no extra crate for it).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A process started in the image (killed if the test ends without stopping it).
struct Process {
    name: String,
    line: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Process {
    fn output(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails the test with the process's output when it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} ({}) exited with {status}:\n{}", self.name, self.line, self.output());
        }
    }

    /// Sends SIGTERM (what `docker stop` sends) and waits up to `grace` for the exit.
    async fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.expect("wait").code(),
            Err(_) => panic!("{} did not exit within {grace:?} of SIGTERM:\n{}", self.name, self.output()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// How a command run to completion ended.
struct Outcome {
    line: String,
    /// `None`: killed (by a signal or the timeout).
    code: Option<i32>,
    output: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`/bin/sh -c \"{}\"` exited with {:?}: {}", self.line, self.code, self.output.trim())
    }
}

/// Runs a health check the way Docker decides that a container has become healthy: again and
/// again until it passes, each run within its timeout, for at least `start_period` (a minute
/// at least here, for a busy machine). Fails with the last outcome, and whether the server's
/// `/readyz` answered 200 directly meanwhile, if it never passes.
async fn until_healthy(
    image: &Image,
    check: &HealthCheck,
    env: &BTreeMap<String, String>,
    server: &mut Process,
    readyz: &str,
) {
    let deadline = Instant::now() + check.start_period.max(Duration::from_secs(60));
    loop {
        server.assert_running();
        let outcome = image.run("health check", &check.words, env, check.timeout).await;
        if outcome.code == Some(0) {
            return;
        }
        if Instant::now() > deadline {
            let direct = match reqwest::get(readyz).await {
                Ok(response) => response.status().to_string(),
                Err(err) => format!("no answer ({err})"),
            };
            panic!(
                "the health check never passed (GET {readyz} directly: {direct}); last run: {outcome}\nserver output:\n{}",
                server.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A URL for `db` that libpq tools (`pg_dump`, `psql`) and the app both understand: the
/// configured `DATABASE_URL` with the database's name, else the server the tests found (no
/// password: a local server with trust authentication, or the private cluster's socket).
fn database_url(db: &TestDb) -> String {
    database_url_named(db, &db.name)
}

fn database_url_named(db: &TestDb, name: &str) -> String {
    if let Ok(raw) = std::env::var("DATABASE_URL")
        && let Ok(mut url) = url::Url::parse(raw.trim())
    {
        url.set_path(name);
        return url.to_string();
    }
    let options = &db.options;
    match options.get_socket() {
        Some(dir) => {
            format!("postgres://{}@/{name}?host={}&port={}", options.get_username(), dir.display(), options.get_port())
        }
        None => format!("postgres://{}@{}:{}/{name}", options.get_username(), options.get_host(), options.get_port()),
    }
}

// ---------------------------------------------------------------------------------------------
// The image.

/// The image's `CMD` serves and its `HEALTHCHECK` reports it healthy; the server writes only
/// under the image's volume; `SIGTERM` stops it with exit 0 within the shutdown bound, and the
/// health check then reports unhealthy (exit 1, not Docker's reserved 2).
#[tokio::test]
async fn the_images_cmd_serves_and_its_healthcheck_reports_healthy() {
    let image = Image::from_dockerfile(&repo_file("Dockerfile"));
    let db = TestDb::create().await;
    let port = free_port();
    // What `docker run -e` would set: this test's database, and free ports (3000 and 9464 may be
    // taken on this machine). Everything else comes from the image.
    let metrics_port = free_port();
    let overrides = [
        ("DATABASE_URL", database_url(&db)),
        ("FACEOFF_ADDR", format!("127.0.0.1:{port}")),
        ("FACEOFF_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
    ];
    let env = image.environment(&[], &overrides);
    let before = image.snapshot();
    let mut server = image.start("the image's CMD", &image.cmd, &env);
    let check = image.healthcheck.clone().expect("the Dockerfile has a HEALTHCHECK");
    until_healthy(&image, &check, &env, &mut server, &format!("http://127.0.0.1:{port}/readyz")).await;

    // Use it: sign up, run two models (the sandbox renders and stores the images).
    let browser = Browser::new(format!("127.0.0.1:{port}").parse().expect("addr"));
    assert_eq!(browser.sign_up("operator@example.com", "a long enough password").await.status(), StatusCode::SEE_OTHER);
    let pool = db.pool(2);
    let run_id = submit_run(&browser, &["flux-2", "flux-ultra-1-1"]).await;
    settled_within(&pool, run_id, Duration::from_secs(60)).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM media_object").fetch_one(&pool).await.expect("media count");
    assert!(stored >= 2, "the run's images are stored ({stored})");
    pool.close().await;
    // What an operator watches: the queue, and the jobs settled by status, route and model.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics listener")
        .text()
        .await
        .expect("metrics");
    for line in [
        "jobs_queued 0",
        "jobs_running 0",
        "jobs_queued_oldest_age_seconds 0",
        "jobs_settled_total{status=\"delivered\",route=\"sandbox\",model=\"flux-2\"} 1",
        "jobs_settled_total{status=\"delivered\",route=\"sandbox\",model=\"flux-ultra-1-1\"} 1",
        "db_pool_connections",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }

    // Read-only root file system: nothing written outside the volumes (the images went there).
    let after = image.snapshot();
    let changed: Vec<_> = after.iter().filter(|(path, meta)| before.get(*path) != Some(meta)).map(|(p, _)| p).collect();
    assert!(changed.is_empty(), "written outside the image's volumes {:?}: {changed:?}", image.volumes);
    let volume_files = walk_files(&image.host(image.volumes.first().expect("a VOLUME")));
    assert!(volume_files >= 2, "the images are under the data volume ({volume_files} files)");

    // docker stop: SIGTERM, then the grace period.
    assert_eq!(server.terminate(SHUTDOWN_BOUND).await, Some(0), "exit 0 after SIGTERM:\n{}", server.output());
    // (A generous timeout: this machine may be busy; Docker would count a timeout as a failure too.)
    let outcome = image.run("health check", &check.words, &env, check.timeout.max(Duration::from_secs(10))).await;
    assert_eq!(outcome.code, Some(1), "unhealthy once the server is gone: {outcome}");

    // The image's shape: an unprivileged numeric user (Kubernetes' runAsNonRoot can verify it),
    // a locked build with the dependencies in a layer of their own, the metrics port not exposed.
    let user = image.user.clone().expect("USER");
    let uid = user.split(':').next().and_then(|u| u.parse::<u32>().ok());
    assert!(uid.is_some_and(|u| u > 0), "USER {user}: a numeric, non-root id");
    let builds: Vec<usize> = image
        .build_stage
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "RUN" && i.args.contains("cargo build"))
        .map(|(n, _)| n)
        .collect();
    assert!(builds.len() == 2, "a dependency build, then the crate's");
    assert!(builds.iter().all(|&n| image.build_stage[n].args.contains("--locked")), "cargo build --locked");
    let copy_all = image.build_stage.iter().position(|i| i.keyword == "COPY" && i.args == ". .").expect("COPY . .");
    let copy_manifests = image.build_stage.iter().position(|i| i.keyword == "COPY" && i.args.contains("Cargo.lock"));
    assert!(copy_manifests.is_some_and(|m| m < builds[0] && builds[0] < copy_all && copy_all < builds[1]));
    // The dependency layer builds from the manifests alone: every target Cargo.toml declares
    // needs its stub there, or `cargo build` stops at "can't find bench".
    let manifest: toml::Table = repo_file("Cargo.toml").parse().expect("Cargo.toml");
    let stubs = &image.build_stage[builds[0]].args;
    for bench in manifest.get("bench").and_then(|b| b.as_array()).into_iter().flatten() {
        let name = bench.get("name").and_then(|n| n.as_str()).expect("a bench has a name");
        assert!(
            stubs.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == name),
            "the Dockerfile's dependency layer stubs benches/{name}.rs"
        );
    }
    assert!(!image.exposed.iter().any(|p| p.starts_with("9464")), "the metrics port is not exposed");
    let ignored = repo_file(".dockerignore");
    for entry in ["target", ".env", ".git", ".faceoff"] {
        assert!(ignored.lines().any(|l| l.trim() == entry), ".dockerignore leaves {entry} out of the build context");
    }
}

fn walk_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { walk_files(&e.path()) } else { 1 }).sum()
}

/// Submits the studio's form for `models` with the browser's session; returns the run's id.
async fn submit_run(browser: &Browser, models: &[&str]) -> Uuid {
    let (status, page) = browser.page(&format!("/studio?models={}", models.join(","))).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = page.attr("form[action=\"/runs\"] input[name=csrf_token]", "value").expect("csrf");
    let key = page.attr("input[name=idempotency_key]", "value").expect("idempotency key");
    let mut form = multipart::Form::new()
        .text("csrf_token", csrf)
        .text("idempotency_key", key)
        .text("prompt", "a lighthouse at dusk, long exposure")
        .text("mode", "2k")
        .text("aspect_ratio", "1:1")
        .text("seed", "7");
    for model in models {
        form = form.text("models", model.to_string());
    }
    let response = browser.post_multipart("/runs", form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the run is accepted");
    let to = location(&response);
    to.strip_prefix("/runs/").and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("run location {to}"))
}

// ---------------------------------------------------------------------------------------------
// The compose file.

/// The compose file as `scripts/check-compose --json` resolved it (anchors and merge keys), after
/// validating it against the Compose Specification's schema.
fn load_compose(path: &Path) -> Result<Value, String> {
    let output = std::process::Command::new("python3")
        .arg(Path::new(REPO).join("scripts/check-compose"))
        .arg(path)
        .arg("--json")
        .output()
        .expect("python3 runs scripts/check-compose (it needs PyYAML and jsonschema)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("JSON"))
}

/// A service's `environment` (map or `K=V` list) as pairs.
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| item.split_once('=').map_or((item.into(), String::new()), |(k, v)| (k.into(), v.into())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the app (or a library it configures from the environment) reads `name`.
fn app_reads(name: &str, known: &std::collections::BTreeSet<String>) -> bool {
    // The allocator (mimalloc, `main.rs`) reads its own options; these are the ones we set.
    const ALLOCATOR_OPTIONS: [&str; 1] = ["MIMALLOC_PURGE_DELAY"];
    known.contains(name)
        || ALLOCATOR_OPTIONS.contains(&name)
        || (name.starts_with("AWS_")
            && name.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>().is_ok())
}

/// The services built from this repository (the Faceoff image).
fn faceoff_services(compose: &Value) -> BTreeMap<String, Value> {
    let services = compose["services"].as_object().expect("services");
    services
        .iter()
        .filter(|(_, s)| !s["build"].is_null() || s["image"].as_str().is_some_and(|i| i.starts_with("faceoff")))
        .map(|(name, s)| (name.clone(), s.clone()))
        .collect()
}

fn words(command: &Value) -> Vec<String> {
    match command {
        Value::Array(items) => items.iter().map(|w| w.as_str().expect("word").to_string()).collect(),
        Value::String(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
        other => panic!("command {other}"),
    }
}

/// The compose file is valid against the Compose Specification, sets for Faceoff only variables
/// it reads (and the image too), gives it a stop grace period that covers the shutdown, runs
/// the migrations once before app and worker, and publishes nothing but on loopback (and never
/// the metrics port).
#[tokio::test]
async fn the_compose_file_is_valid_and_sets_only_what_the_app_reads() {
    let compose = load_compose(&Path::new(REPO).join("docker-compose.yml")).unwrap_or_else(|errors| panic!("{errors}"));
    // The validator does refuse what the specification does not allow.
    let broken = tempfile_dir::TempDir::new("faceoff-compose");
    let broken_file = broken.path().join("compose.yml");
    std::fs::write(
        &broken_file,
        "services:\n  app:\n    image: x\n    stop_grace_period: [80]\n    restarts: always\n",
    )
    .expect("write");
    let errors = load_compose(&broken_file).expect_err("an invalid file is refused");
    assert!(errors.contains("restarts") && errors.contains("stop_grace_period"), "{errors}");

    let faceoff = faceoff_services(&compose);
    assert_eq!(faceoff.keys().map(String::as_str).collect::<Vec<_>>(), ["app", "migrate", "worker"]);
    let known = Config::variables();
    let image = Image::from_dockerfile(&repo_file("Dockerfile"));
    for (name, _) in &image.env {
        assert!(app_reads(name, &known), "the Dockerfile sets {name}, which the app does not read");
    }
    for (service, definition) in &faceoff {
        for (name, _) in environment(definition) {
            assert!(app_reads(&name, &known), "docker-compose.yml sets {name} for {service}; the app does not read it");
        }
        let grace = definition["stop_grace_period"].as_str().map(go_duration).unwrap_or(Duration::from_secs(10));
        assert!(
            grace >= SHUTDOWN_BOUND,
            "{service}: stop_grace_period {grace:?} < the shutdown bound {SHUTDOWN_BOUND:?}"
        );
        assert_eq!(definition["read_only"], Value::Bool(true), "{service}: read-only root file system");
    }

    // Migrations once, before the app and the worker.
    let migrate = &faceoff["migrate"];
    assert_eq!(words(&migrate["command"]), ["faceoff", "migrate"]);
    assert_eq!(migrate["restart"], "no");
    for service in ["app", "worker"] {
        let depends = &faceoff[service]["depends_on"];
        assert_eq!(depends["migrate"]["condition"], "service_completed_successfully", "{service}");
        assert_eq!(depends["db"]["condition"], "service_healthy", "{service}");
    }
    assert_eq!(words(&faceoff["app"]["command"]), ["faceoff", "serve"]);
    assert_eq!(words(&faceoff["worker"]["command"]), ["faceoff", "worker"]);
    assert!(!compose["services"]["db"]["healthcheck"]["test"].is_null(), "PostgreSQL has a health check");
    // The worker serves no pages: the image's health check would ask a port nobody listens on.
    assert!(!faceoff["worker"]["healthcheck"]["test"].is_null(), "the worker has a health check of its own");
    assert!(compose["services"]["mailpit"]["image"].as_str().is_some_and(|i| i.starts_with("axllent/mailpit")));

    // Published ports: loopback only, and never the metrics port.
    for (service, definition) in compose["services"].as_object().expect("services") {
        for port in definition["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap_or_else(|| panic!("{service}: ports as \"host_ip:host:container\""));
            assert!(port.starts_with("127.0.0.1:"), "{service} publishes {port} beyond loopback");
            assert!(!port.ends_with(":9464"), "{service} publishes the metrics port");
        }
    }
}

/// The compose stack's Faceoff services, run as compose would (image environment, then the
/// service's; here with this test's database and free ports): the one-shot `migrate` exits 0,
/// then `app` and `worker` start and their health checks pass; SIGTERM stops both with exit 0.
#[tokio::test]
async fn the_compose_services_migrate_once_then_report_healthy() {
    let compose = load_compose(&Path::new(REPO).join("docker-compose.yml")).unwrap_or_else(|errors| panic!("{errors}"));
    let services = faceoff_services(&compose);
    let image = Image::from_dockerfile(&repo_file("Dockerfile"));
    let db = TestDb::create().await;
    let url = database_url(&db);

    let migrate = &services["migrate"];
    let env = image.environment(&environment(migrate), &[("DATABASE_URL", url.clone())]);
    let outcome = image.run("migrate", &words(&migrate["command"]), &env, Duration::from_secs(120)).await;
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let pool = db.pool(1);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .expect("migrations table");
    let shipped = std::fs::read_dir(Path::new(REPO).join("migrations"))
        .expect("migrations")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".up.sql"))
        .count();
    assert_eq!(applied as usize, shipped, "every migration applied once");
    pool.close().await;

    let mut running = Vec::new();
    for name in ["app", "worker"] {
        let service = &services[name];
        let port = free_port();
        let overrides = [
            ("DATABASE_URL", url.clone()),
            ("FACEOFF_ADDR", format!("127.0.0.1:{port}")),
            ("FACEOFF_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
        ];
        let env = image.environment(&environment(service), &overrides);
        let check = match service["healthcheck"]["test"].as_array() {
            Some(test) => {
                let test: Vec<String> = test.iter().map(|w| w.as_str().expect("word").to_string()).collect();
                let words = match test.first().map(String::as_str) {
                    Some("CMD") => test[1..].to_vec(),
                    Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
                    other => panic!("{name}: healthcheck test {other:?}"),
                };
                let timeout = service["healthcheck"]["timeout"].as_str().map_or(Duration::from_secs(30), go_duration);
                let start_period = service["healthcheck"]["start_period"].as_str().map_or(Duration::ZERO, go_duration);
                HealthCheck { words, timeout, start_period }
            }
            None => image.healthcheck.clone().expect("the image's HEALTHCHECK"),
        };
        let mut process = image.start(name, &words(&service["command"]), &env);
        until_healthy(&image, &check, &env, &mut process, &format!("http://127.0.0.1:{port}/readyz")).await;
        running.push((process, check, env));
    }
    for (mut process, check, env) in running {
        assert_eq!(process.terminate(SHUTDOWN_BOUND).await, Some(0), "{}:\n{}", process.name, process.output());
        let outcome = image.run("health check", &check.words, &env, check.timeout.max(Duration::from_secs(10))).await;
        assert_eq!(outcome.code, Some(1), "{} is unhealthy once stopped: {outcome}", process.name);
    }
}

/// `faceoff health` follows readiness: 0 while the database answers, 1 while it does not (and
/// for a refused connection or a bad setting), so that Docker marks the container unhealthy.
#[tokio::test]
async fn the_health_probe_follows_readiness() {
    let app = TestApp::spawn().await;
    let probe = |url: String| async move {
        let output = tokio::process::Command::new(BIN)
            .args(["health", "--url", &url])
            .env_clear()
            .output()
            .await
            .expect("faceoff health");
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, out) = probe(app.url("/readyz")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("200 OK ready"), "{out}");

    let name = app.db.name.clone();
    let admin = app.db.options.clone().database("postgres");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&admin).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")))
        .execute(&mut conn)
        .await
        .expect("disallow");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut conn)
        .await
        .expect("terminate");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, out) = probe(app.url("/readyz")).await;
        if code == Some(1) {
            assert!(out.contains("503"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "still {code:?}: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")))
        .execute(&mut conn)
        .await
        .expect("allow");

    // Nothing listening, and a setting that does not parse: 1 (Docker reserves 2).
    let (code, out) = probe(format!("http://127.0.0.1:{}/readyz", free_port())).await;
    assert_eq!(code, Some(1), "{out}");
    let output = tokio::process::Command::new(BIN)
        .arg("health")
        .env_clear()
        .env("FACEOFF_ADDR", "nope")
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(1));

    // The metrics listener answers readiness too (for `faceoff worker`).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_addr = listener.local_addr().expect("addr");
    let router = faceoff::app::metrics_router(app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let output = tokio::process::Command::new(BIN)
        .args(["health", "--metrics"])
        .env_clear()
        .env("FACEOFF_METRICS_ADDR", metrics_addr.to_string())
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Rolling deploys: once a newer version has migrated the database, this (older) version still
/// starts on it, as an instance restarting during the roll-out or after a rollback must, instead
/// of refusing the migration it does not know.
#[tokio::test]
async fn a_version_starts_on_a_database_a_newer_version_migrated() {
    let (db, pool) = migrated_db(2).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (29991231000000, 'a newer version''s migration', true, decode('00', 'hex'), 0)",
    )
    .execute(&pool)
    .await
    .expect("a newer migration");
    faceoff::server::prepare_database(&pool, &test_config()).await.expect("the older version starts");
    let output = tokio::process::Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", database_url(&db))
        .output()
        .await
        .expect("faceoff migrate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// Backups: a dump restores into a fresh database, and the ledger is checked.

/// Counts that a restore must bring back as they were.
async fn counts(pool: &sqlx::PgPool) -> BTreeMap<&'static str, i64> {
    let mut counts = BTreeMap::new();
    for table in ["app_user", "generation_run", "generation_job", "payment", "media_object", "ledger_transfer"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
            .expect("count");
        counts.insert(table, n);
    }
    counts
}

/// Runs `scripts/restore-db DUMP URL`.
fn restore(dump: &Path, url: &str) -> (bool, String) {
    let output = std::process::Command::new("bash")
        .arg(Path::new(REPO).join("scripts/restore-db"))
        .arg(dump)
        .arg(url)
        .env("FACEOFF_BIN", BIN)
        .env_remove("DATABASE_URL")
        .output()
        .expect("scripts/restore-db");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn pg_dump(url: &str, file: &Path, extra: &[&str]) {
    let output = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(file)
        .args(extra)
        .arg(url)
        .output()
        .expect("pg_dump (PostgreSQL's client tools) is installed");
    assert!(output.status.success(), "pg_dump: {}", String::from_utf8_lossy(&output.stderr));
}

/// A database that the next restore creates, dropped at the end of the test.
fn restored_db(source: &TestDb, suffix: &str) -> TestDb {
    let name = format!("{}_{suffix}", source.name);
    TestDb { options: source.options.clone().database(&name), name }
}

/// The restore procedure of docs/production.md: a database filled through the app (users who
/// signed up, runs whose jobs were delivered or failed, one still queued, sandbox top-ups paid and
/// pending) is dumped while the app runs, restored by `scripts/restore-db` into a fresh database,
/// and comes back whole with its ledger invariants holding. A truncated dump, a dump that lost the
/// ledger's entries, and a restore onto an existing database are refused.
#[tokio::test]
async fn a_dump_restores_into_a_fresh_database_with_the_ledger_intact() {
    let app = TestApp::spawn_with(|c| c.sandbox_fail = vec!["flux-ultra-1-1".into()]).await;
    let workers = CancellationToken::new();
    let worker_options = jobs::WorkerOptions {
        workers: 2,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(100),
        per_provider: 24,
        max_transient: 3,
        running_limits: faceoff::jobs::RunningLimits::NONE,
    };
    jobs::spawn_workers(
        app.pool.clone(),
        app.state.store.clone(),
        app.state.providers.clone(),
        worker_options,
        workers.clone(),
    );
    let mut people = Vec::new();
    for n in 0..3 {
        let browser = app.browser();
        let response = browser.sign_up(&format!("person{n}@example.com"), "a long enough password").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        people.push(browser);
    }
    // Runs: Flux 2 delivered (charged), Ultra failed (its hold voided).
    for browser in &people[..2] {
        let run = submit_run(browser, &["flux-2", "flux-ultra-1-1"]).await;
        let jobs = settled_within(&app.pool, run, Duration::from_secs(60)).await;
        assert!(jobs.iter().any(|j| j.status() == jobs::JobStatus::Delivered));
        assert!(jobs.iter().any(|j| j.status() == jobs::JobStatus::Failed));
    }
    // Top-ups: two paid in the sandbox checkout, one left pending.
    for (n, browser) in people.iter().enumerate() {
        let response = browser.submit("/credits", "/credits/checkout", &[("pack", "standard-500")]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let to = location(&response);
        if n < 2 {
            let pay = browser.form(&to, &format!("{to}/pay")).await;
            assert_eq!(pay.submit(browser, &[]).await.status(), StatusCode::SEE_OTHER);
        }
    }
    // One run still queued when the dump is taken: its holds are pending.
    workers.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    submit_run(&people[0], &["flux-2", "flux-2:klein-9b"]).await;

    app.assert_invariants().await;
    let source_counts = counts(&app.pool).await;
    let source_totals = faceoff::ledger::totals(&app.pool).await.expect("totals");
    assert_eq!(source_counts["app_user"], 3);
    assert_eq!(source_counts["generation_run"], 3);
    assert_eq!(source_counts["payment"], 3);
    assert!(source_totals.pending_holds == 2 && source_totals.holds == 6, "{source_totals:?}");

    let dir = tempfile_dir::TempDir::new("faceoff-dump");
    let dump = dir.path().join("faceoff.dump");
    pg_dump(&database_url(&app.db), &dump, &[]);

    // The restore, and what came back.
    let target = restored_db(&app.db, "restored");
    let (ok, output) = restore(&dump, &database_url_named(&app.db, &target.name));
    assert!(ok, "restore-db failed:\n{output}");
    assert!(output.contains("ledger invariants hold"), "{output}");
    let restored = target.pool(2);
    assert_eq!(counts(&restored).await, source_counts);
    let restored_totals = faceoff::ledger::totals(&restored).await.expect("totals");
    assert_eq!(restored_totals, source_totals);
    assert_ledger_invariants(&restored).await;
    restored.close().await;

    // Never on top of an existing database.
    let (ok, output) = restore(&dump, &database_url_named(&app.db, &target.name));
    assert!(!ok && output.contains("could not create database"), "{output}");

    // A truncated dump (a backup cut short) fails the restore.
    let bytes = std::fs::read(&dump).expect("dump");
    let truncated = dir.path().join("truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let target_truncated = restored_db(&app.db, "truncated");
    let (ok, output) = restore(&truncated, &database_url_named(&app.db, &target_truncated.name));
    assert!(!ok && output.contains("FAILED"), "a truncated dump must fail:\n{output}");

    // A dump that lost the ledger's entries restores, and the ledger check catches it.
    let partial = dir.path().join("partial.dump");
    pg_dump(&database_url(&app.db), &partial, &["--exclude-table-data=ledger_entry"]);
    let target_partial = restored_db(&app.db, "partial");
    let (ok, output) = restore(&partial, &database_url_named(&app.db, &target_partial.name));
    assert!(!ok, "a restore without ledger entries must fail:\n{output}");
    assert!(output.contains("violated: transfers without a balanced pair of entries"), "{output}");
    assert!(output.contains("violated: cached balances that differ from their entries"), "{output}");
}
