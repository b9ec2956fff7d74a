//! The `portico` binary itself: check, apply, export, tokens, settings, and serve's start and
//! graceful stop.

use portico_model::MasterKey;
use portico_testkit::MockUpstream;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn portico(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portico"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(dir);
    command
}

fn run(command: &mut Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = command.output().expect("run portico");
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

const QUICKSTART: &str = include_str!("../../../../examples/quickstart.yaml");
const RESILIENCE: &str = include_str!("../../../../examples/resilience.yaml");

#[test]
fn check_lists_every_problem_by_path_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("good.yaml"), QUICKSTART).expect("write");
    let (ok, out, _) = run(portico(dir.path()).args(["check", "-f", "good.yaml"]));
    assert!(ok);
    assert!(out.contains("OK (1 services, 2 routes, 0 consumers)"), "{out}");

    std::fs::write(dir.path().join("typo.yaml"), "routes:\n  - name: a\n    mock: {}\n    pathz: [/x]\n")
        .expect("write");
    let (ok, _, err) = run(portico(dir.path()).args(["check", "-f", "typo.yaml"]));
    assert!(!ok);
    assert!(err.contains("routes[0].pathz (line 4)"), "{err}");

    let broken = "services:\n  - name: a\n    targets: [{address: nowhere}]\nroutes:\n  - name: b\n    paths: [x]\n    service: c\n";
    std::fs::write(dir.path().join("bad.yaml"), broken).expect("write");
    let (ok, _, err) = run(portico(dir.path()).args(["check", "-f", "bad.yaml"]));
    assert!(!ok);
    for expected in ["3 problems", "services[0].targets[0].address", "routes[0].paths[0]", "routes[0].service"] {
        assert!(err.contains(expected), "missing {expected}: {err}");
    }
}

#[test]
fn apply_shows_the_diff_and_export_round_trips() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("portico.yaml"), QUICKSTART).expect("write");
    let (ok, out, err) = run(portico(dir.path()).args(["apply", "-f", "portico.yaml", "--dry-run"]));
    assert!(ok, "{err}");
    assert!(out.contains("+ service files") && out.contains("+ route hello") && out.contains("dry run"), "{out}");

    let (ok, out, err) = run(portico(dir.path()).args(["apply", "-f", "portico.yaml"]));
    assert!(ok, "{err}");
    assert!(out.contains("applied 3 change(s)"), "{out}");
    let (_, out, _) = run(portico(dir.path()).args(["apply", "-f", "portico.yaml"]));
    assert_eq!(out.trim(), "no changes");

    let (ok, exported, err) = run(portico(dir.path()).args(["export"]));
    assert!(ok, "{err}");
    let original = portico_model::parse_yaml(QUICKSTART).expect("quickstart").sorted();
    assert_eq!(portico_model::parse_yaml(&exported).expect("export parses").sorted(), original);
    std::fs::write(dir.path().join("exported.yaml"), &exported).expect("write");
    let (_, out, _) = run(portico(dir.path()).args(["apply", "-f", "exported.yaml"]));
    assert_eq!(out.trim(), "no changes", "export → apply is a no-op");

    // Changing and removing entities shows as such.
    let smaller = QUICKSTART.replace("/hello", "/hi");
    let smaller = &smaller[..smaller.find("  # Everything under").expect("files route")];
    let smaller = smaller.replace("services:\n  - name: files\n    targets:\n      - address: 127.0.0.1:9001\n", "");
    std::fs::write(dir.path().join("smaller.yaml"), smaller).expect("write");
    let (ok, out, err) = run(portico(dir.path()).args(["apply", "-f", "smaller.yaml"]));
    assert!(ok, "{err}");
    assert!(out.contains("~ route hello") && out.contains("- route files") && out.contains("- service files"), "{out}");
}

#[test]
fn admin_tokens_are_created_listed_and_revoked() {
    let dir = tempfile::tempdir().expect("dir");
    let (ok, secret, err) = run(portico(dir.path()).args(["admin", "token", "create", "--name", "deploy-bot"]));
    assert!(ok, "{err}");
    assert!(secret.trim().starts_with("portico_"));
    assert!(err.contains("shown only this once"));
    let (_, list, _) = run(portico(dir.path()).args(["admin", "token", "list"]));
    assert!(list.contains("deploy-bot") && list.contains("active") && !list.contains(secret.trim()), "{list}");
    let (ok, out, _) = run(portico(dir.path()).args(["admin", "token", "revoke", "deploy-bot"]));
    assert!(ok && out.contains("revoked 1"), "{out}");
    let (ok, _, err) = run(portico(dir.path()).args(["admin", "token", "revoke", "deploy-bot"]));
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[test]
fn flags_beat_environment_beats_settings_file() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("settings.yaml"), "store: sqlite://from-file.db\n").expect("write");
    let migrate = |env: Option<&str>, flag: Option<&str>| {
        let mut command = portico(dir.path());
        command.args(["--settings", "settings.yaml", "migrate"]);
        if let Some(env) = env {
            command.env("PORTICO_STORE", env);
        }
        if let Some(flag) = flag {
            command.args(["--store", flag]);
        }
        run(&mut command).1
    };
    assert!(migrate(None, None).contains("sqlite://from-file.db"));
    assert!(migrate(Some("sqlite://from-env.db"), None).contains("sqlite://from-env.db"));
    assert!(migrate(Some("sqlite://from-env.db"), Some("sqlite://from-flag.db")).contains("sqlite://from-flag.db"));

    std::fs::write(dir.path().join("typo.yaml"), "stor: x\n").expect("write");
    let (ok, _, err) = run(portico(dir.path()).args(["--settings", "typo.yaml", "migrate"]));
    assert!(!ok && err.contains("unknown field `stor`"), "{err}");
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Starts `portico serve` and returns it with the lines it wrote to stderr until it was serving.
fn serve(dir: &Path, proxy: u16, admin: u16) -> (std::process::Child, String) {
    serve_with(dir, proxy, admin, &[])
}

pub(crate) fn serve_with(dir: &Path, proxy: u16, admin: u16, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = portico(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{proxy}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(extra)
        .env("PORTICO_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.contains("Portico is serving") {
            break;
        }
        line.clear();
    }
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, seen)
}

/// One `portico serve` process of a cluster test; killed when dropped.
pub(crate) struct Node {
    child: std::process::Child,
    /// The proxy listener's URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` Portico processes, each serving `config` from a file of its own with one worker
/// and `redis` for cluster state.
pub(crate) fn serve_nodes(config: &str, redis: &str, count: usize) -> Vec<Node> {
    (0..count)
        .map(|_| {
            let dir = tempfile::tempdir().expect("dir");
            std::fs::write(dir.path().join("portico.yaml"), config).expect("write");
            let (proxy, admin) = (free_port(), free_port());
            let flags = ["--config", "portico.yaml", "--redis-url", redis, "--workers", "1"];
            let (child, seen) = serve_with(dir.path(), proxy, admin, &flags);
            assert!(seen.contains("Portico is serving"), "{seen}");
            Node { child, url: format!("http://127.0.0.1:{proxy}"), _dir: dir }
        })
        .collect()
}

#[tokio::test]
async fn serve_prints_the_first_token_once_and_drains_on_sigterm() {
    let upstream = MockUpstream::start("slow").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "services:\n  - name: slow\n    targets: [{{address: \"{}\"}}]\nroutes:\n  - name: slow\n    service: slow\n",
        upstream.addr
    );
    std::fs::write(dir.path().join("portico.yaml"), config).expect("write");
    let (ok, _, err) = run(portico(dir.path()).args(["apply", "-f", "portico.yaml"]));
    assert!(ok, "{err}");

    let (proxy, admin) = (free_port(), free_port());
    let (mut first, seen) = serve(dir.path(), proxy, admin);
    assert!(seen.contains("Created the first admin token"), "{seen}");
    assert_eq!(seen.matches("portico_").count(), 1, "the token appears once: {seen}");
    assert!(dir.path().join("portico-data/portico.db").exists(), "the default store is ./portico-data/portico.db");

    let http = reqwest::Client::new();
    let in_flight = tokio::spawn(http.get(format!("http://127.0.0.1:{proxy}/delay/700")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Command::new("kill").args(["-TERM", &first.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let response = in_flight.await.expect("task").expect("the request in flight completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("text"), "late");
    let status = tokio::task::spawn_blocking(move || first.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "portico exits cleanly: {status}");
    assert!(http.get(format!("http://127.0.0.1:{proxy}/")).send().await.is_err(), "nothing listens any more");

    let (mut second, seen) = serve(dir.path(), proxy, admin);
    assert!(!seen.contains("admin token"), "the token is printed only on first start: {seen}");
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test]
async fn sighup_rereads_the_configuration_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("portico.yaml");
    let yaml = |body: &str| format!("routes:\n  - name: hello\n    mock: {{body: {body}}}\n");
    std::fs::write(&file, yaml("aaa")).expect("write");
    let (proxy, admin) = (free_port(), free_port());
    let (mut child, _) = serve_with(dir.path(), proxy, admin, &["--config", "portico.yaml"]);
    let get = || async move {
        reqwest::get(format!("http://127.0.0.1:{proxy}/")).await.expect("get").text().await.expect("text")
    };
    assert_eq!(get().await, "aaa");

    // Same size and modification time: only the signal can make Portico notice. The new
    // text gets the old time before it replaces the file, so that no poll can see it early.
    let before = std::fs::metadata(&file).and_then(|m| m.modified()).expect("mtime");
    let edited = dir.path().join("edited.yaml");
    std::fs::write(&edited, yaml("bbb")).expect("edit");
    std::fs::File::options().write(true).open(&edited).and_then(|f| f.set_modified(before)).expect("set mtime");
    std::fs::rename(&edited, &file).expect("replace");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get().await, "aaa");
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill").success());
    let mut body = String::new();
    for _ in 0..100 {
        body = get().await;
        if body == "bbb" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(body, "bbb");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_resilience_example_checks_applies_and_round_trips() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("resilience.yaml"), RESILIENCE).expect("write");
    let (ok, out, err) = run(portico(dir.path()).args(["check", "-f", "resilience.yaml"]));
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(portico(dir.path()).args(["apply", "-f", "resilience.yaml"]));
    assert!(ok, "{err}");
    let (ok, exported, err) = run(portico(dir.path()).args(["export"]));
    assert!(ok, "{err}");
    let original = portico_model::parse_yaml(RESILIENCE).expect("example").sorted();
    assert_eq!(portico_model::parse_yaml(&exported).expect("export parses").sorted(), original);
}

const ACCESS: &str = include_str!("../../../../examples/access.yaml");

#[test]
fn credentials_are_stored_and_exported_only_as_hashes() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("access.yaml"), ACCESS).expect("write");
    let (ok, out, err) = run(portico(dir.path()).args(["check", "-f", "access.yaml"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 consumers"), "{out}");
    let (ok, out, err) = run(portico(dir.path()).args(["apply", "-f", "access.yaml"]));
    assert!(ok, "{err}");
    assert!(out.contains("+ consumer finance-app") && out.contains("~ global settings"), "{out}");
    // The same file again changes nothing: the stored password hash still matches.
    let (_, out, _) = run(portico(dir.path()).args(["apply", "-f", "access.yaml"]));
    assert_eq!(out.trim(), "no changes");

    let (ok, exported, err) = run(portico(dir.path()).args(["export"]));
    assert!(ok, "{err}");
    for secret in ["web-key-please-rotate-me", "correct horse battery staple"] {
        assert!(!exported.contains(secret), "{exported}");
    }
    assert!(exported.contains("key_sha256:") && exported.contains("password_hash: $argon2id$"), "{exported}");
    // The export is a file `apply` takes back without change.
    std::fs::write(dir.path().join("exported.yaml"), &exported).expect("write");
    let (ok, out, err) = run(portico(dir.path()).args(["apply", "-f", "exported.yaml"]));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "no changes");
}

#[test]
fn secrets_are_stored_sealed_exported_sealed_and_rotated() {
    let dir = tempfile::tempdir().expect("dir");
    let (_, key_a, _) = run(portico(dir.path()).args(["secrets", "generate-key"]));
    let (_, key_b, _) = run(portico(dir.path()).args(["secrets", "generate-key"]));
    std::fs::write(dir.path().join("b.key"), &key_b).expect("write");
    let issued = portico_testkit::TestCa::new("CA").issue(&["api.test"]);
    // A certificate's private key and a route's JWT secret.
    let yaml = format!(
        "certificates:\n  - name: api\n    snis: [api.test]\n    cert: |\n{}    key: |\n{}\
         routes:\n  - name: signed\n    paths: [/signed]\n    mock: {{status: 200}}\n    policies:\n      jwt_auth:\n        \
         secrets: [{{kid: k1, secret: {JWT_SECRET}}}]\n",
        indent(&issued.cert_pem),
        indent(&issued.key_pem)
    );
    std::fs::write(dir.path().join("certs.yaml"), yaml).expect("write");

    let (ok, _, err) = run(portico(dir.path()).args(["apply", "-f", "certs.yaml"]));
    assert!(!ok && err.contains("PORTICO_MASTER_KEY"), "{err}");
    let with_a = |args: &[&str]| run(portico(dir.path()).env("PORTICO_MASTER_KEY", key_a.trim()).args(args));
    let (ok, out, err) = with_a(&["apply", "-f", "certs.yaml"]);
    assert!(ok && out.contains("+ certificate api") && out.contains("+ route signed"), "{out}{err}");
    let (_, out, _) = with_a(&["apply", "-f", "certs.yaml"]);
    assert_eq!(out.trim(), "no changes", "the same secrets are not sealed anew");

    let (ok, exported, _) = run(portico(dir.path()).args(["export"]));
    assert!(ok && exported.contains("key: enc:v1:") && !exported.contains("PRIVATE KEY"), "{exported}");
    assert!(exported.contains("secret: enc:v1:") && !exported.contains(JWT_SECRET), "{exported}");

    let (ok, out, err) = with_a(&["secrets", "rotate-key", "--new-key-file", "b.key"]);
    assert!(ok && out.contains("re-sealed 2 secret(s)"), "{out}{err}");
    let (_, exported, _) = run(portico(dir.path()).args(["export"]));
    let config = portico_model::parse_yaml(&exported).expect("export parses");
    let sealed = config.certificates[0].key.clone().expect("key");
    let (a, b) = (MasterKey::parse(&key_a).expect("a"), MasterKey::parse(&key_b).expect("b"));
    assert!(sealed.reveal(Some(&a)).is_err(), "the old key no longer opens it");
    assert_eq!(sealed.reveal(Some(&b)).ok(), Some(issued.key_pem));
    let jwt = config.routes[0].policies.jwt_auth.as_ref().expect("jwt_auth");
    let secret = jwt.secrets[0].secret.clone().expect("secret");
    assert_eq!(secret.reveal(Some(&b)).ok().as_deref(), Some(JWT_SECRET));
}

const AI: &str = include_str!("../../../../examples/ai.yaml");

#[test]
fn the_ai_example_checks_and_its_keys_are_sealed_exported_sealed_and_rotated() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ai.yaml"), AI).expect("write");
    let (ok, out, err) = run(portico(dir.path()).args(["check", "-f", "ai.yaml"]));
    assert!(ok && out.contains("3 AI providers, 2 AI models, 1 AI budget, 1 prompt"), "{out}{err}");
    let (_, key_a, _) = run(portico(dir.path()).args(["secrets", "generate-key"]));
    let (_, key_b, _) = run(portico(dir.path()).args(["secrets", "generate-key"]));
    std::fs::write(dir.path().join("b.key"), &key_b).expect("write");
    let (ok, _, err) = run(portico(dir.path()).args(["apply", "-f", "ai.yaml"]));
    assert!(!ok && err.contains("PORTICO_MASTER_KEY"), "provider keys need a master key: {err}");
    let with_a = |args: &[&str]| run(portico(dir.path()).env("PORTICO_MASTER_KEY", key_a.trim()).args(args));
    let (ok, out, err) = with_a(&["apply", "-f", "ai.yaml"]);
    assert!(ok && out.contains("+ AI provider openai") && out.contains("+ AI model smart"), "{out}{err}");
    let (_, out, _) = with_a(&["apply", "-f", "ai.yaml"]);
    assert_eq!(out.trim(), "no changes");
    let (ok, exported, _) = run(portico(dir.path()).args(["export"]));
    assert!(ok && exported.contains("key: enc:v1:") && !exported.contains("sk-replace-me"), "{exported}");
    std::fs::write(dir.path().join("exported.yaml"), &exported).expect("write");
    let (_, out, _) = with_a(&["apply", "-f", "exported.yaml"]);
    assert_eq!(out.trim(), "no changes", "the export applies back unchanged");
    let (ok, out, err) = with_a(&["secrets", "rotate-key", "--new-key-file", "b.key"]);
    assert!(ok && out.contains("re-sealed 3 secret(s)"), "{out}{err}");
    let (_, exported, _) = run(portico(dir.path()).args(["export"]));
    let config = portico_model::parse_yaml(&exported).expect("export parses");
    let key =
        config.ai_providers.iter().find(|p| p.name == "openai").expect("openai").keys[1].key.clone().expect("key");
    assert_eq!(key.reveal(Some(&MasterKey::parse(&key_b).expect("b"))).ok().as_deref(), Some("sk-replace-me-too"));
}

const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes";

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}

#[tokio::test]
async fn the_log_filter_changes_at_run_time_and_lines_can_be_json() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("portico.yaml"), "routes:\n  - name: dead\n    service: dead\nservices:\n  - name: dead\n    targets: [{address: \"127.0.0.1:9\"}]\n").expect("write");
    let (proxy, admin) = (free_port(), free_port());
    let mut child = Killed(
        portico(dir.path())
            .args(["serve", "--config", "portico.yaml", "--log-format", "json"])
            .args(["--listen", &format!("127.0.0.1:{proxy}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .env("PORTICO_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve"),
    );
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (seen, stderr) = (lines.clone(), child.0.stderr.take().expect("stderr"));
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let wait_for = |wanted: &'static str| {
        let lines = lines.clone();
        async move {
            for _ in 0..200 {
                let found =
                    lines.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|l| l.contains(wanted)).cloned();
                if let Some(line) = found {
                    return line;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("no log line with `{wanted}` in {:?}", lines.lock().unwrap_or_else(|p| p.into_inner()));
        }
    };
    wait_for("Created the first admin token").await;
    // The token is printed on a line of its own after that one, which may not be read yet.
    let mut token = None;
    for _ in 0..200 {
        let lines = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
        token = lines.iter().map(|l| l.trim()).find(|l| l.starts_with("portico_")).map(str::to_owned);
        if token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let token = token.expect("the token line");
    let serving: Value = serde_json::from_str(&wait_for("Portico is serving").await).expect("a JSON log line");
    assert_eq!(serving["level"], "INFO", "{serving}");

    let http = reqwest::Client::new();
    let logging = format!("http://127.0.0.1:{admin}/api/v1/logging");
    let now: Value = http.get(&logging).bearer_auth(&token).send().await.expect("get").json().await.expect("json");
    assert_eq!(now["filter"], "info");
    // Debug lines are not written yet: a failing upstream try is logged at debug.
    http.get(format!("http://127.0.0.1:{proxy}/")).send().await.expect("request");
    let bad = http
        .put(&logging)
        .bearer_auth(&token)
        .json(&json!({"filter": "portico_gateway=[{"}))
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["errors"][0]["path"], "filter", "{body}");
    let changed = http.put(&logging).bearer_auth(&token).json(&json!({"filter": "info,portico_gateway=debug"})).send();
    let changed: Value = changed.await.expect("put").json().await.expect("json");
    let mut directives: Vec<&str> = changed["filter"].as_str().unwrap_or("").split(',').collect();
    directives.sort_unstable();
    assert_eq!(directives, ["info", "portico_gateway=debug"], "{changed}");
    http.get(format!("http://127.0.0.1:{proxy}/")).send().await.expect("request");
    let debug: Value = serde_json::from_str(&wait_for("upstream try failed").await).expect("JSON");
    assert_eq!(debug["level"], "DEBUG", "{debug}");
    let tries =
        lines.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|l| l.contains("upstream try failed")).count();
    assert_eq!(tries, 1, "only the request after the change is logged at debug");
}

/// A child process, killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
