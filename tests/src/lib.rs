//! The end-to-end harness: starts the real `tollgate` binary on a free
//! loopback port with its own data dir, and drives it over HTTP and its CLI.
//!
//! The binary is `TOLLGATE_BIN` when set, else `tollgate` in the target
//! directory of this test executable (`scripts/test.sh` builds it first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";

/// The `tollgate` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/tollgate
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("tollgate{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_default();
    assert!(
        candidate.exists(),
        "the tollgate binary is not at {}: run `cargo build --bin tollgate` first (scripts/test.sh does) or set TOLLGATE_BIN",
        candidate.display()
    );
    candidate
}

/// Runs `tollgate ARGS` to its end, killing it (and failing) after `limit`.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut child = command(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tollgate: {e}"));
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate {args:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("tollgate {args:?}: {e}"))
}

/// `tollgate ARGS` with the test environment: loopback metrics on port 0,
/// keys reloaded every second, warnings only, no inherited store or config,
/// then `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("TOLLGATE_KEY_RELOAD_SECS", "1")
        .env("TOLLGATE_METRICS_LISTEN", "127.0.0.1:0")
        .env("TOLLGATE_LOG", "warn")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .envs(env.iter().copied());
    command
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("tollgate-e2e-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A running `tollgate up`, killed on drop.
pub struct Tollgate {
    child: Child,
    pub base: String,
    /// Where `/metrics` is served.
    pub metrics: String,
    pub data_dir: PathBuf,
    /// Whether the data dir outlives this process (for a restart).
    keep_data: bool,
    /// The store it was started on, when not the data dir's SQLite file; the
    /// CLI commands run against the same one.
    database_url: Option<String>,
    pub http: reqwest::Client,
}

impl Tollgate {
    /// Starts `tollgate up` on port 0 in a new data dir.
    pub fn start() -> Self {
        Self::start_in(temp_dir("up"))
    }

    /// Starts `tollgate up` on port 0 in `data_dir` and waits for the line
    /// announcing the API address.
    pub fn start_in(data_dir: PathBuf) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts `tollgate up` on port 0 in `data_dir` with extra environment.
    pub fn start_with(data_dir: PathBuf, env: &[(&str, &str)]) -> Self {
        Self::spawn(&["up"], "api", data_dir, env)
    }

    /// Starts `tollgate up` on port 0 in `data_dir` with extra environment,
    /// its log (stderr) written to the file `log`.
    pub fn start_logging_to(data_dir: PathBuf, env: &[(&str, &str)], log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        Self::spawn_with(&["up"], "api", data_dir, env, Stdio::from(file))
    }

    /// Starts `tollgate gateway --routes ROUTES` on port 0 over `data_dir`.
    pub fn start_gateway(data_dir: PathBuf, routes: &Path, env: &[(&str, &str)]) -> Self {
        let routes = routes.to_string_lossy().into_owned();
        Self::spawn(&["gateway", "--routes", &routes], "gateway", data_dir, env)
    }

    /// Runs `tollgate ARGS --listen 127.0.0.1:0 --data-dir DIR` and waits for
    /// the line `LABEL URL` announcing where it serves.
    fn spawn(args: &[&str], label: &'static str, data_dir: PathBuf, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(args, label, data_dir, env, Stdio::inherit())
    }

    /// [`Tollgate::spawn`] with its stderr going to `stderr`.
    fn spawn_with(args: &[&str], label: &'static str, data_dir: PathBuf, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut child = command(args, env)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tollgate: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((name, url)) = line.trim().split_once(' ') {
                    let _ = tx.send((name.to_owned(), url.trim().to_owned()));
                }
            }
        });
        let (mut base, mut metrics) = (None, None);
        while base.is_none() || metrics.is_none() {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((name, url)) if name == label => base = Some(url.trim_end_matches("/api/v1").to_owned()),
                Ok((name, url)) if name == "metrics" => metrics = Some(url),
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("tollgate did not announce its addresses within 60s");
                }
            }
        }
        let (base, metrics) = (base.unwrap_or_default(), metrics.unwrap_or_default());
        let database_url = env.iter().find(|(k, _)| *k == "TOLLGATE_DATABASE_URL").map(|(_, v)| (*v).to_owned());
        Self { child, base, metrics, data_dir, keep_data: false, database_url, http: reqwest::Client::new() }
    }

    /// Runs a CLI command against this instance's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[])
    }

    /// Runs a CLI command against this instance's data dir and store with
    /// extra environment.
    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(binary());
        command.args(args).arg("--data-dir").arg(&self.data_dir).env_remove("TOLLGATE_DATABASE_URL");
        if let Some(url) = &self.database_url {
            command.env("TOLLGATE_DATABASE_URL", url);
        }
        let output =
            command.envs(env.iter().copied()).output().unwrap_or_else(|e| panic!("cannot run tollgate {args:?}: {e}"));
        assert!(output.status.success(), "tollgate {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the status and the JSON body (Null when empty).
    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method: reqwest::Method = method.parse().unwrap_or_else(|e| panic!("{e}"));
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.unwrap_or_else(|e| panic!("request to {path} failed: {e:?}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, body)
    }

    pub async fn signup_and_login(&self, email: &str, tenant_name: &str) -> Value {
        let (status, body) = self
            .send(
                "POST",
                "/api/v1/auth/signup",
                None,
                Some(json!({"email": email, "password": PASSWORD, "name": "Someone", "tenant_name": tenant_name})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        self.login(email).await
    }

    pub async fn login(&self, email: &str) -> Value {
        let (status, body) =
            self.send("POST", "/api/v1/auth/login", None, Some(json!({"email": email, "password": PASSWORD}))).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Invites `email` into the tenant of `owner` (a login response) with
    /// `role`, accepts from the outbox mail as a new user, and logs in there;
    /// returns the access token.
    pub async fn invite_member(&self, owner: &Value, email: &str, role: &str) -> String {
        let token = owner["access_token"].as_str().unwrap_or_default();
        let tenant = owner["tenant"]["id"].as_str().unwrap_or_default();
        let path = format!("/api/v1/tenants/{tenant}/invitations");
        let (status, body) = self.send("POST", &path, Some(token), Some(json!({"email": email, "role": role}))).await;
        assert_eq!(status, 201, "{body}");
        let invite = self.mailed_token(email, "tgi_");
        let accept = json!({"token": invite, "name": "Member", "password": PASSWORD});
        let (status, body) = self.send("POST", "/api/v1/invitations/accept", None, Some(accept)).await;
        assert_eq!(status, 201, "{body}");
        self.login(email).await["access_token"].as_str().unwrap_or_default().to_owned()
    }

    /// The newest token starting with `prefix` mailed to `email`, read from
    /// the outbox with the CLI.
    pub fn mailed_token(&self, email: &str, prefix: &str) -> String {
        let outbox =
            String::from_utf8_lossy(&self.cli(&["outbox", "--to", email, "--limit", "100"]).stdout).into_owned();
        let start = outbox.find(prefix).unwrap_or_else(|| panic!("no `{prefix}` token for {email} in the outbox"));
        outbox[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
    }

    /// Asks the process to stop (SIGTERM, as a service manager does) and
    /// waits for it to exit on its own, keeping its data dir (returned).
    pub fn terminate(mut self) -> PathBuf {
        self.keep_data = true;
        let pid = self.child.id().to_string();
        // The shell's own `kill`: no procps needed.
        let sent = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status();
        assert!(sent.is_ok_and(|s| s.success()), "cannot signal tollgate {pid}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "tollgate exited with {status} after SIGTERM");
                    break;
                }
                Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("tollgate did not exit within 20 s of SIGTERM"),
            }
        }
        self.data_dir.clone()
    }

    /// Stops the process and waits for it, keeping its data dir (returned).
    pub fn stop(mut self) -> PathBuf {
        self.keep_data = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A real protocol peer of the tests: a Node.js script in `tests/peers`
/// (its packages from `tests/peers/package-lock.json`), given `config` as
/// JSON in `config_var`, on a free loopback port; stopped on drop. Its
/// standard output is lines `<kind> <value>`.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<(String, String)>,
}

impl Peer {
    /// Starts `script` and waits for its line `announce <value>`.
    fn start(script: &str, config_var: &str, config: &Value, announce: &str) -> (Self, String) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
        assert!(
            dir.join("node_modules").exists(),
            "the tests' protocol peers are not installed: run `npm ci --prefix tests/peers` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .env(config_var, config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (Node.js runs the tests' protocol peers): {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((kind, value)) = line.split_once(' ') {
                    let _ = tx.send((kind.to_owned(), value.trim().to_owned()));
                }
            }
        });
        let mut peer = Self { child, lines };
        let value = peer
            .next(announce, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{script} did not start within 30 s"));
        (peer, value)
    }

    /// The value of the next line of `kind` within `limit`.
    fn next(&mut self, kind: &str, limit: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok((k, value)) if k == kind => return Some(value),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real OpenID Provider (`tests/peers/op.mjs`, the `oidc-provider`
/// package). `config` names its clients and accounts (see the script).
pub struct OpenIdProvider {
    _peer: Peer,
    pub issuer: String,
}

impl OpenIdProvider {
    pub fn start(config: &Value) -> Self {
        let (peer, issuer) = Peer::start("op.mjs", "OP_CONFIG", config, "issuer");
        Self { _peer: peer, issuer }
    }
}

/// A real SAML identity provider (`tests/peers/saml-idp.mjs`, Auth0's
/// `samlp` package) posting to `acs`; `config` names its accounts (see the
/// script). Its metadata is at `{base}/metadata`.
pub struct SamlIdp {
    _peer: Peer,
    pub base: String,
}

impl SamlIdp {
    pub fn start(config: &Value) -> Self {
        let (peer, base) = Peer::start("saml-idp.mjs", "SAML_CONFIG", config, "idp");
        Self { _peer: peer, base }
    }
}

/// A real SMTP server (`tests/peers/smtp.mjs`, the `smtp-server` package)
/// that reports each mail it accepts. `config` may require credentials and
/// name recipients to refuse (see the script).
pub struct SmtpServer {
    peer: Peer,
    pub port: u16,
}

impl SmtpServer {
    pub fn start(config: &Value) -> Self {
        let (peer, port) = Peer::start("smtp.mjs", "SMTP_CONFIG", config, "smtp");
        let port = port.parse().unwrap_or_else(|_| panic!("the SMTP server announced `{port}`"));
        Self { peer, port }
    }

    /// The next mail accepted within `limit`: `{"from", "to", "user", "data"}`.
    pub fn next_mail(&mut self, limit: Duration) -> Option<Value> {
        self.peer.next("mail", limit).and_then(|json| serde_json::from_str(&json).ok())
    }
}

/// A new, empty PostgreSQL database on the test server named by
/// `TOLLGATE_TEST_DATABASE_URL`, as a URL; `None` without a server (which
/// fails instead in CI).
pub async fn postgres_database() -> Option<String> {
    let admin_url = match std::env::var("TOLLGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the PostgreSQL tests: set TOLLGATE_TEST_DATABASE_URL"
            );
            return None;
        }
    };
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL test server: {e}"));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("tg_e2e_{}_{nanos}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create the e2e database: {e}"));
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
    Some(format!("{base}/{name}"))
}

/// Sends `GET PATH` with `headers` over a raw connection, so the path
/// reaches the server exactly as written (HTTP clients normalize it), and
/// returns the status and the body.
pub async fn raw_get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let text = raw_exchange(base, request.as_bytes()).await;
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Writes `request` as it is over a new connection and returns all the
/// server sends until it closes the connection (or 10 s pass).
pub async fn raw_exchange(base: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.write_all(request).await.unwrap_or_else(|e| panic!("write: {e}"));
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}
