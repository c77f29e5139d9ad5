//! A small W3C WebDriver client for browser tests and the page benchmark: starts Debian's
//! `chromedriver` on a free loopback port, opens one headless Chromium session through it and
//! speaks the WebDriver HTTP JSON protocol over plain HTTP/1.1 (no client crate).
//!
//! Only what the service map tests need: navigate, run scripts (sync and async), find, read
//! and click elements, click at viewport coordinates with real pointer actions (so the click
//! goes through the page's own hit-testing, like a user's), read the browser console, save a
//! screenshot. The session is deleted (Chromium quits) and the driver killed on drop.
//! Chromedriver's log goes to a file in the scratch directory; every error names the command
//! that failed, WebDriver's error code and message, and that log.

use super::{Scratch, free_port, peer};
use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags here: headless, no sandbox (tests run as root), and nothing that reaches
/// the network on its own (this machine's network is closed: background networking, component
/// updates, sync and QUIC probes would only fail, slowly and noisily).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
];

/// Chromium and chromedriver from Debian's packages (scripts/peers/install.sh), or `None`
/// (test skipped with a message) when missing and `MESHGATE_REQUIRE_PEERS` is not `1`; with it,
/// a missing one fails the test.
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    let browser = peer(
        "MESHGATE_CHROMIUM",
        "/usr/bin/chromium",
        "Chromium (Debian package chromium)",
    )?;
    let driver = peer(
        "MESHGATE_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromedriver (Debian package chromium-driver)",
    )?;
    Some((browser, driver))
}

/// An element found on the page (its WebDriver reference).
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
    /// The CSS selector it was found with, for messages.
    pub selector: String,
}

/// A running chromedriver with one headless Chromium session.
pub struct Browser {
    driver: Option<Child>,
    port: u16,
    session: String,
    /// Chromedriver's log file (in the scratch directory).
    pub log: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session with a
    /// `width`x`height` viewport and a fresh profile in `scratch`.
    pub fn start(
        scratch: &Scratch,
        chromium: &Path,
        chromedriver: &Path,
        (width, height): (u32, u32),
    ) -> Result<Browser, String> {
        let log = scratch.path("chromedriver.log");
        let profile = scratch.path("chromium-profile");
        std::fs::create_dir_all(&profile)
            .map_err(|e| format!("create Chromium profile dir {}: {e}", profile.display()))?;
        let mut last_err = String::new();
        // A free port can be taken between the probe and chromedriver's bind: retry a few.
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", log.display()))
                .arg("--log-level=INFO")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("start {}: {e}", chromedriver.display()))?;
            let mut browser = Browser {
                driver: Some(child),
                port,
                session: String::new(),
                log: log.clone(),
            };
            match browser.wait_driver(Duration::from_secs(20)) {
                Ok(()) => {
                    browser.new_session(chromium, &profile, (width, height))?;
                    return Ok(browser);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Polls `GET /status` until the driver says it is ready.
    fn wait_driver(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok((200, body)) = exchange(self.port, "GET", "/status", &[])
                && serde_json::from_slice::<Json>(&body)
                    .is_ok_and(|v| v["value"]["ready"] == Json::Bool(true))
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.driver.as_mut().map(|c| c.try_wait()) {
                self.driver = None;
                return Err(format!(
                    "chromedriver exited with {status} before answering on port {}; its log {}:\n{}",
                    self.port,
                    self.log.display(),
                    self.log_tail()
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "chromedriver not ready on port {} after {timeout:?}; its log {}:\n{}",
                    self.port,
                    self.log.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn new_session(
        &mut self,
        chromium: &Path,
        profile: &Path,
        (width, height): (u32, u32),
    ) -> Result<(), String> {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "script": 60_000, "pageLoad": 60_000, "implicit": 0 },
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": args,
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let v = self.command("POST", "/session", &caps)?;
        self.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session: no sessionId in {v}"))?
            .to_string();
        // Headless windows can differ from --window-size by the (absent) browser frame: make
        // the viewport exactly the size asked for.
        let inner = self.execute("return [window.innerWidth, window.innerHeight];", &[])?;
        let (w, h) = (
            inner[0].as_i64().unwrap_or(0),
            inner[1].as_i64().unwrap_or(0),
        );
        if (w, h) != (i64::from(width), i64::from(height)) {
            let rect = self.session_command("GET", "/window/rect", &Json::Null)?;
            let outer = |k: &str| rect[k].as_i64().unwrap_or(0);
            let want = json!({
                "width": outer("width") + i64::from(width) - w,
                "height": outer("height") + i64::from(height) - h,
            });
            self.session_command("POST", "/window/rect", &want)?;
            let inner = self.execute("return [window.innerWidth, window.innerHeight];", &[])?;
            if inner != json!([width, height]) {
                return Err(format!(
                    "the viewport is {inner} after resizing the window, not [{width}, {height}]"
                ));
            }
        }
        Ok(())
    }

    /// One WebDriver command; its `value`, or an error with WebDriver's code and message.
    fn command(&self, method: &str, path: &str, body: &Json) -> Result<Json, String> {
        let payload = if method == "GET" || method == "DELETE" {
            Vec::new()
        } else {
            serde_json::to_vec(body).expect("JSON encodes")
        };
        let (status, answer) = exchange(self.port, method, path, &payload).map_err(|e| {
            format!(
                "WebDriver {method} {path}: {e} (chromedriver on port {}; its log {})",
                self.port,
                self.log.display()
            )
        })?;
        let v: Json = serde_json::from_slice(&answer).map_err(|e| {
            format!(
                "WebDriver {method} {path}: HTTP {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&answer)
            )
        })?;
        if status != 200 {
            let value = &v["value"];
            return Err(format!(
                "WebDriver {method} {path} failed: HTTP {status} {}: {}",
                value["error"].as_str().unwrap_or("(no error code)"),
                value["message"].as_str().unwrap_or("(no message)")
            ));
        }
        Ok(v["value"].clone())
    }

    fn session_command(&self, method: &str, rest: &str, body: &Json) -> Result<Json, String> {
        self.command(method, &format!("/session/{}{rest}", self.session), body)
    }

    /// Opens `url` and waits until it has loaded.
    pub fn navigate(&self, url: &str) -> Result<(), String> {
        self.session_command("POST", "/url", &json!({ "url": url }))
            .map(|_| ())
            .map_err(|e| format!("navigate to {url}: {e}"))
    }

    /// Runs `script` as the body of a function (`arguments[i]` are `args`); its return value.
    pub fn execute(&self, script: &str, args: &[Json]) -> Result<Json, String> {
        self.session_command(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": args }),
        )
        .map_err(|e| format!("{e}\n  script: {}", one_line(script)))
    }

    /// Runs `script` as the body of a function whose last argument is the callback that
    /// finishes it; the value passed to the callback (the script timeout is 60 s).
    pub fn execute_async(&self, script: &str, args: &[Json]) -> Result<Json, String> {
        self.session_command(
            "POST",
            "/execute/async",
            &json!({ "script": script, "args": args }),
        )
        .map_err(|e| format!("{e}\n  async script: {}", one_line(script)))
    }

    /// Awaits the promise `expression` evaluates to in the page; its resolved value. A
    /// rejection is an error carrying its message.
    pub fn await_promise(&self, expression: &str) -> Result<Json, String> {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             Promise.resolve().then(() => ({expression})).then(\n\
               v => done({{ ok: v === undefined ? null : v }}),\n\
               e => done({{ err: String(e && e.stack || e) }}));"
        );
        let v = self.execute_async(&script, &[])?;
        match v.get("err") {
            Some(e) => Err(format!(
                "`{expression}` rejected: {}",
                e.as_str().unwrap_or("?")
            )),
            None => Ok(v["ok"].clone()),
        }
    }

    /// Polls the JavaScript `expression` until it is truthy; its value. On timeout the error
    /// has its last value and the browser console.
    pub fn wait_for(&self, expression: &str, timeout: Duration) -> Result<Json, String> {
        let start = Instant::now();
        let script = format!("return ({expression});");
        loop {
            let v = self.execute(&script, &[])?;
            let truthy = match &v {
                Json::Null => false,
                Json::Bool(b) => *b,
                Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Json::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "`{expression}` still {v} after {timeout:?}; browser console:\n{}",
                    self.console().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first element matching the CSS selector.
    pub fn find(&self, selector: &str) -> Result<Element, String> {
        let v = self.session_command(
            "POST",
            "/element",
            &json!({ "using": "css selector", "value": selector }),
        )?;
        element(&v, selector)
    }

    /// Every element matching the CSS selector, in document order.
    pub fn find_all(&self, selector: &str) -> Result<Vec<Element>, String> {
        let v = self.session_command(
            "POST",
            "/elements",
            &json!({ "using": "css selector", "value": selector }),
        )?;
        v.as_array()
            .ok_or_else(|| format!("find `{selector}`: not a list: {v}"))?
            .iter()
            .map(|e| element(e, selector))
            .collect()
    }

    /// The rendered text of an element (what a user sees).
    pub fn text(&self, el: &Element) -> Result<String, String> {
        let v = self
            .session_command("GET", &format!("/element/{}/text", el.id), &Json::Null)
            .map_err(|e| format!("text of `{}`: {e}", el.selector))?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Clicks an element (WebDriver's element click: scrolled into view, at its centre).
    pub fn click(&self, el: &Element) -> Result<(), String> {
        self.session_command("POST", &format!("/element/{}/click", el.id), &json!({}))
            .map(|_| ())
            .map_err(|e| format!("click `{}`: {e}", el.selector))
    }

    /// Types `text` into an element as a user would (focus, key events, `input` events);
    /// `\u{E007}` is the Enter key.
    pub fn send_keys(&self, el: &Element, text: &str) -> Result<(), String> {
        self.session_command(
            "POST",
            &format!("/element/{}/value", el.id),
            &json!({ "text": text }),
        )
        .map(|_| ())
        .map_err(|e| format!("typing into `{}`: {e}", el.selector))
    }

    /// A real mouse click at viewport coordinates (CSS pixels): pointer move, down, up,
    /// through WebDriver's Actions API, so the page's own hit-testing decides what it hits.
    pub fn click_at(&self, x: f64, y: f64) -> Result<(), String> {
        let (xi, yi) = (x.round() as i64, y.round() as i64);
        let actions = json!({
            "actions": [{
                "type": "pointer",
                "id": "mouse",
                "parameters": { "pointerType": "mouse" },
                "actions": [
                    { "type": "pointerMove", "duration": 0, "origin": "viewport", "x": xi, "y": yi },
                    { "type": "pointerDown", "button": 0 },
                    { "type": "pointerUp", "button": 0 },
                ],
            }]
        });
        self.session_command("POST", "/actions", &actions)
            .map_err(|e| format!("click at ({xi}, {yi}): {e}"))?;
        self.session_command("DELETE", "/actions", &Json::Null)
            .map(|_| ())
            .map_err(|e| format!("release actions after the click at ({xi}, {yi}): {e}"))
    }

    /// The browser console since the last call (`LEVEL message` lines); empty when the
    /// driver cannot tell.
    pub fn console(&self) -> Vec<String> {
        match self.session_command("POST", "/se/log", &json!({ "type": "browser" })) {
            Ok(Json::Array(entries)) => entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect(),
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("(console not available: {e})")],
        }
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let v = self.session_command("GET", "/screenshot", &Json::Null)?;
        let b64 = v
            .as_str()
            .ok_or_else(|| format!("screenshot: not a string: {v}"))?;
        let png = base64_decode(b64).map_err(|e| format!("screenshot: {e}"))?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err("screenshot: the decoded data is not a PNG".into());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("screenshot: create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("screenshot: write {}: {e}", path.display()))
    }

    /// The last 40 lines of chromedriver's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Quits Chromium; the driver goes after it.
            let _ = self.session_command("DELETE", "", &Json::Null);
        }
        if let Some(mut c) = self.driver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP/1.1 exchange with chromedriver. Its own, not the harness's `http_request`:
/// chromedriver keeps connections open whatever the request says, so the answer ends where
/// its `Content-Length` says, not at the end of the stream.
fn exchange(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    // Scripts may run up to the session's 60 s script timeout.
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other(
                "connection closed inside the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut answer = Vec::new();
    match length {
        Some(n) => {
            answer.resize(n, 0);
            r.read_exact(&mut answer)?;
        }
        None => {
            r.read_to_end(&mut answer)?;
        }
    }
    Ok((status, answer))
}

fn element(v: &Json, selector: &str) -> Result<Element, String> {
    let id = v[ELEMENT_KEY]
        .as_str()
        .ok_or_else(|| format!("find `{selector}`: no element reference in {v}"))?;
    Ok(Element {
        id: id.to_string(),
        selector: selector.to_string(),
    })
}

fn one_line(script: &str) -> String {
    let s: String = script.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// Decodes standard base64 (RFC 4648, with or without padding), as WebDriver's screenshots
/// come. Small enough not to need a crate in the test harness.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let data = text.trim_end_matches('=').as_bytes();
    if data.len() % 4 == 1 {
        return Err(format!("base64 of {} characters is truncated", text.len()));
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = sextet(c).ok_or_else(|| format!("not base64: byte {c:#04x}"))?;
            acc |= v << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}
