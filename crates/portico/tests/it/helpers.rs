//! Starting Portico in-process for a test, and talking to it.

use portico::{Running, Settings};
use portico_gateway::ProxySettings;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub struct Portico {
    pub running: Running,
    /// `http://127.0.0.1:PORT` of the proxy listener.
    pub proxy: String,
    pub admin: String,
    pub token: String,
    pub store_url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn settings(store: String) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        admin_listen: "127.0.0.1:0".parse().expect("address"),
        store,
        redis_url: None,
        master_key: None,
        tls_listen: None,
        workers: 2,
        proxy: ProxySettings { header_timeout: Duration::from_secs(1), ..ProxySettings::default() },
        telemetry: portico_gateway::TelemetrySettings::default(),
        log_format: portico::logging::LogFormat::Text,
        access_log_retention: Duration::from_secs(7 * 86_400),
        analytics_retention: [
            (portico_model::Interval::Minute, Duration::from_secs(2 * 86_400)),
            (portico_model::Interval::Hour, Duration::from_secs(35 * 86_400)),
            (portico_model::Interval::Day, Duration::from_secs(730 * 86_400)),
        ],
    }
}

impl Portico {
    /// Portico on a fresh SQLite store.
    pub async fn start() -> Portico {
        Portico::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Portico {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = settings(format!("sqlite://{}", dir.path().join("portico.db").display()));
        adjust(&mut settings);
        Portico::launch(settings, None, dir).await
    }

    /// Portico in file mode, serving `yaml`; the file is `dir/portico.yaml`.
    pub async fn start_file(yaml: &str) -> Portico {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("portico.yaml");
        std::fs::write(&file, yaml).expect("write config");
        let settings = settings(format!("sqlite://{}", dir.path().join("portico.db").display()));
        Portico::launch(settings, Some(file), dir).await
    }

    pub async fn launch(settings: Settings, file: Option<PathBuf>, dir: tempfile::TempDir) -> Portico {
        let running = portico::start(&settings, file).await.expect("Portico starts");
        let token = running.initial_token.clone().expect("a fresh store gets a first admin token");
        Portico {
            proxy: format!("http://{}", running.proxy_addr),
            admin: format!("http://{}", running.admin_addr),
            running,
            token,
            store_url: settings.store,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops this Portico and starts another on the same store, with the same admin token.
    pub async fn restart(self, adjust: impl FnOnce(&mut Settings)) -> Portico {
        let Portico { running, token, store_url, http, dir, .. } = self;
        running.shutdown().await;
        let mut settings = settings(store_url.clone());
        adjust(&mut settings);
        let running = portico::start(&settings, None).await.expect("Portico starts again");
        Portico {
            proxy: format!("http://{}", running.proxy_addr),
            admin: format!("http://{}", running.admin_addr),
            running,
            token,
            store_url,
            http,
            dir,
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.proxy))
    }

    /// A request to the proxy with any method.
    pub fn http_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.proxy))
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}/api/v1{path}", self.admin)).bearer_auth(&self.token)
    }

    /// Creates an entity through the admin API and waits until the gateway serves it.
    pub async fn create(&self, collection: &str, entity: Value) -> Value {
        let response = self.admin(Method::POST, &format!("/{collection}")).json(&entity).send().await.expect("admin");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.settle().await;
        body
    }

    /// Waits until the gateway serves the store's newest revision.
    pub async fn settle(&self) {
        for _ in 0..500 {
            let status: Value =
                self.admin(Method::GET, "/status").send().await.expect("status").json().await.expect("json");
            if status["store_revision"].is_null() || status["serving_revision"] == status["store_revision"] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the gateway did not pick up the newest configuration");
    }

    /// Polls `path` until it answers `wanted` (or gives up after a few seconds) and returns the
    /// last body seen.
    pub async fn body_becomes(&self, path: &str, wanted: &str) -> String {
        let mut body = String::new();
        for _ in 0..250 {
            body = self.get(path).send().await.expect("request").text().await.expect("text");
            if body == wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        body
    }

    /// Polls `GET /api/v1/status` until it reports an error (or gives up) and returns it.
    pub async fn status_with_error(&self) -> Value {
        let mut status = Value::Null;
        for _ in 0..250 {
            status = self.admin(Method::GET, "/status").send().await.expect("status").json().await.expect("json");
            if status["last_error"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        status
    }

    /// A service with these targets (`host:port` strings).
    pub async fn service(&self, name: &str, targets: &[String]) {
        let targets: Vec<Value> = targets.iter().map(|t| serde_json::json!({ "address": t })).collect();
        self.create("services", serde_json::json!({ "name": name, "targets": targets })).await;
    }

    /// Which upstream answered `GET path` (its `x-upstream` header), and the status.
    pub async fn answered_by(&self, request: RequestBuilder) -> (u16, String) {
        let response = request.send().await.expect("request");
        let upstream = response.headers().get("x-upstream").map_or("", |v| v.to_str().unwrap_or("")).to_owned();
        (response.status().as_u16(), upstream)
    }

    /// `GET /api/v1/services/{name}/health`.
    pub async fn health(&self, service: &str) -> Value {
        let response = self.admin(Method::GET, &format!("/services/{service}/health")).send().await.expect("admin");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}
