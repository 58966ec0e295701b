//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromedriver`, which
//! `.ci/run` installs), and a page server on an origin of its own, so the pages the tests
//! open are cross-origin to every node, as a web app's are.
//!
//! Pages are blank; a test runs its JavaScript with [`Browser::run`] (an async function
//! body whose resolved value comes back as JSON) and watches what the page recorded with
//! [`Browser::wait_js`], polling with a deadline.

use crate::harness::{wait_for, DEADLINE};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Where the browser client's sources live.
pub fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Serves `web/test/` (the client's unit tests), `examples/browser.html` and a blank page
/// on `127.0.0.1` and
/// `localhost`, each a different origin from the nodes'.
pub struct PageServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    pub async fn start() -> PageServer {
        use warp::Filter;
        let blank = warp::path!("blank.html").map(|| {
            warp::reply::html(
                "<!doctype html><html><head><title>t</title><link rel=\"icon\" href=\"data:,\"></head>\
                 <body></body></html>",
            )
        });
        // `web/test/<file>`, read at each request so the page sees the file as it is now.
        let tests = warp::path("test")
            .and(warp::path::param::<String>())
            .and(warp::path::end())
            .map(|name: String| {
                let file = web_dir().join("test").join(&name);
                let ok = !name.contains("..") && !name.starts_with('.');
                match std::fs::read_to_string(file).ok().filter(|_| ok) {
                    Some(text) => warp::http::Response::builder()
                        .header("content-type", "text/javascript; charset=utf-8")
                        .header("access-control-allow-origin", "*")
                        .body(text),
                    None => warp::http::Response::builder()
                        .status(404)
                        .body(String::new()),
                }
                .expect("a response")
            });
        // The shipped example, as `python3 -m http.server --directory examples` serves it.
        let example = warp::path!("browser.html").map(|| {
            let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/browser.html");
            warp::reply::html(std::fs::read_to_string(file).unwrap_or_default())
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the page server");
        let addr = listener.local_addr().expect("its address");
        let server = warp::serve(blank.or(example).or(tests))
            .incoming(listener)
            .run();
        PageServer {
            addr,
            task: tokio::spawn(server),
        }
    }

    /// The origin `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same server under another origin, `http://localhost:<port>`.
    pub fn other_origin(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// chromedriver, and the session it runs. Dropping it ends the session (Chromium quits)
/// and kills chromedriver, on success, on a failed assertion, and on a failed start alike.
/// chromedriver and Chromium stay in the test's process group, so Ctrl-C ends them too.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            end_session(self.port, session);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE /session/{id}`, blocking, with short timeouts (it runs in `Drop`).
fn end_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(request.as_bytes()).is_ok() {
        let _ = conn.read_to_end(&mut Vec::new());
    }
}

/// One Chromium session.
pub struct Browser {
    driver: Driver,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let res = http
        .post(url)
        .json(&body)
        .timeout(DEADLINE + Duration::from_secs(5))
        .send()
        .await
        .expect("chromedriver answers");
    let v: Value = res.json().await.expect("WebDriver JSON");
    v["value"].clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium showing `url`.
    pub async fn open(url: &str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the browser tests need Debian's chromium and chromium-driver \
                 (`apt-get install chromium chromium-driver`; .ci/run installs them)"
            );
        }
        // Chromium's temporary files and crash reports go into the profile, not /tmp and ~.
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TMPDIR", profile.path())
            .env("XDG_CONFIG_HOME", profile.path())
            .env("XDG_CACHE_HOME", profile.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Driver {
            child,
            port,
            session: None,
        };
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{base}/status");
        wait_for("chromedriver to answer", || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                let v: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = post(&http, &format!("{base}/session"), caps).await;
        driver.session = Some(
            v["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
                .to_string(),
        );
        let browser = Browser {
            driver,
            base,
            http,
            _profile: profile,
        };
        let script_ms = DEADLINE.as_millis() as u64;
        browser
            .command("timeouts", json!({"script": script_ms}))
            .await;
        browser.command("url", json!({"url": url})).await;
        browser
    }

    async fn command(&self, name: &str, body: Value) -> Value {
        let session = self.driver.session.as_deref().unwrap_or_default();
        let url = format!("{}/session/{session}/{name}", self.base);
        let v = post(&self.http, &url, body).await;
        if let Some(e) = v.get("error") {
            panic!("WebDriver {name} failed: {e}: {}", v["message"]);
        }
        v
    }

    /// Runs `body` as an async function in the page and returns what it resolves to.
    /// A rejection fails the test with its message.
    pub async fn run(&self, body: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             (async () => {{ {body} }})().then(\n\
               (v) => done({{ok: v === undefined ? null : v}}),\n\
               (e) => done({{err: String(e && e.stack || e)}}));"
        );
        let v = self
            .command("execute/async", json!({"script": script, "args": []}))
            .await;
        if let Some(e) = v.get("err") {
            panic!("page script failed: {}", e.as_str().unwrap_or_default());
        }
        v["ok"].clone()
    }

    /// Evaluates the JavaScript expression `expr` until it is truthy, and returns it.
    pub async fn wait_js(&self, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr}) || null;");
        wait_for(what, || {
            let script = script.clone();
            async move {
                let v = self
                    .command("execute/sync", json!({"script": script, "args": []}))
                    .await;
                (!v.is_null()).then_some(v)
            }
        })
        .await
    }

    /// Messages the page logged at level SEVERE (uncaught errors, failed loads).
    pub async fn console_errors(&self) -> Vec<String> {
        let v = self.command("se/log", json!({"type": "browser"})).await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}
