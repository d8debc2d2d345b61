//! The app as its user meets it: a real window (under Xvfb when there is no display),
//! driven through WebDriver (tauri-driver + WebKitWebDriver), with the real pykiln-built
//! sidecar behind it. Needs `tauri-driver` and `WebKitWebDriver` on PATH (Debian:
//! `cargo install tauri-driver --locked`, `apt install webkit2gtk-driver xvfb`);
//! `tests/tauri-notes` in the pykiln repository installs them and runs this.
//!
//! The app is the one `cargo build --release` made in ../src-tauri (or `TAURI_NOTES_APP`),
//! with the sidecar Tauri copied beside it.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::json;

/// The built app, absolute (it is compared with /proc/PID/exe).
fn app() -> PathBuf {
    let path = std::env::var_os("TAURI_NOTES_APP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../src-tauri/target/release/tauri-notes")
        });
    path.canonicalize().unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the app first (cargo build --release in examples/tauri-notes/src-tauri)",
            path.display()
        )
    })
}
const IDENTIFIER: &str = "dev.pykiln.tauri-notes";
/// The main window's title (tauri.conf.json).
const WINDOW_TITLE: &str = "Notes";

/// Everything the test starts, ended on drop even when an assertion fails.
struct Harness {
    home: tempfile::TempDir,
    xvfb: Option<Child>,
    display: String,
    driver: Option<Child>,
    port: u16,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for pid in app_pids(self.home.path())
            .into_iter()
            .chain(sidecar_pids(self.home.path()))
        {
            // SAFETY: plain kill(2) of processes this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for mut child in [self.driver.take(), self.xvfb.take()].into_iter().flatten() {
            // Each runs in its own process group: this also ends WebKitWebDriver, which
            // tauri-driver started and would leave behind when killed itself.
            // SAFETY: kill(2) of a process group this test created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// How the app is ended.
enum Quit {
    /// The window manager's close button.
    CloseWindow,
    /// A signal to the app process.
    Signal(libc::c_int),
}

impl Harness {
    /// Ends the one running app and requires that it and its server are gone.
    async fn quit_app(&self, client: Client, how: Quit) {
        let home = self.home.path();
        let app = app_pids(home);
        assert_eq!(app.len(), 1, "one app process: {app:?}");
        one_sidecar(home);
        let what = match how {
            Quit::CloseWindow => {
                // Re-sent every 3 s, as a user clicks again: in a WebDriver session, GTK
                // has been seen to act on none of the requests for up to ~12 s (no
                // CloseRequested logged), about 1 run in 10 idle and most runs with both
                // cores busy. Without WebDriver the same app under the same load quit
                // on the first message in ~0.13 s, 8 runs of 8: it comes from the
                // automation session, not from the app.
                let mut sent = 0;
                while sent < 15 && close_like_a_window_manager(&self.display, app[0]) {
                    sent += 1;
                    let start = Instant::now();
                    while !app_pids(home).is_empty() && start.elapsed() < Duration::from_secs(3) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if app_pids(home).is_empty() {
                        break;
                    }
                }
                assert!(sent > 0, "no viewable X window '{WINDOW_TITLE}' of the app (pid {}) takes WM_DELETE_WINDOW", app[0]);
                if sent > 1 {
                    eprintln!("closing the window took {sent} WM_DELETE_WINDOW messages");
                }
                "its window closed".to_owned()
            }
            Quit::Signal(signal) => {
                // SAFETY: kill(2) of the app this test started.
                unsafe { libc::kill(app[0], signal) };
                format!("signal {signal}")
            }
        };
        wait_gone(&format!("the app after {what}"), || app_pids(home)).await;
        wait_gone(&format!("pykiln-notes after the app's {what}"), || {
            sidecar_pids(home)
        })
        .await;
        // The session's browser is gone; ending the session may fail.
        let _ = client.close().await;
    }

    fn start() -> Harness {
        for tool in ["tauri-driver", "WebKitWebDriver"] {
            assert!(
                which(tool).is_some(),
                "{tool} is not on PATH: `cargo install tauri-driver --locked` and \
                 `apt install webkit2gtk-driver xvfb` (tests/tauri-notes does both)"
            );
        }
        let sidecar = app().with_file_name("pykiln-notes");
        assert!(
            sidecar.is_file(),
            "{} is missing: build the sidecar first (pykiln build examples/notes-server \
             --tauri-sidecar examples/tauri-notes/src-tauri/binaries), then rebuild the app",
            sidecar.display()
        );
        let home = tempfile::tempdir().expect("temporary directory");
        let mut harness = Harness {
            home,
            xvfb: None,
            display: std::env::var("DISPLAY").unwrap_or_default(),
            driver: None,
            port: free_port(),
        };
        if harness.display.is_empty() {
            harness.start_xvfb();
        }
        let native_port = free_port();
        let mut driver = Command::new("tauri-driver");
        driver
            .args(["--port", &harness.port.to_string()])
            .args(["--native-port", &native_port.to_string()])
            .stdout(Stdio::null())
            .process_group(0);
        harness.env(&mut driver);
        harness.driver = Some(driver.spawn().expect("cannot start tauri-driver"));
        // Both must listen: tauri-driver answers before WebKitWebDriver is up, and a
        // session request in between fails.
        for port in [harness.port, native_port] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_until(
                &format!("WebDriver on port {port}"),
                Duration::from_secs(30),
                || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
            );
        }
        harness
    }

    /// A private X server: display number from the first free lock file.
    fn start_xvfb(&mut self) {
        let n = (90..190)
            .find(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists())
            .expect("no free X display number");
        let xvfb = Command::new("Xvfb")
            .args([
                format!(":{n}").as_str(),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("cannot start Xvfb (apt install xvfb)");
        self.xvfb = Some(xvfb);
        let socket = format!("/tmp/.X11-unix/X{n}");
        wait_until("Xvfb to start", Duration::from_secs(20), || {
            Path::new(&socket).exists()
        });
        self.display = format!(":{n}");
    }

    /// The app's environment: our display, and XDG dirs inside the test's temporary home
    /// (the app's data dir, hence its database and log, live there).
    fn env(&self, cmd: &mut Command) {
        let home = self.home.path();
        cmd.env("DISPLAY", &self.display)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            // The server's debug lines (archive opened, extensions loaded) on its
            // stderr: they must reach the app's log.
            .env("PYKILN_LOG", "debug")
            .env_remove("WAYLAND_DISPLAY");
    }

    fn data_dir(&self) -> PathBuf {
        self.home.path().join("data").join(IDENTIFIER)
    }

    async fn open_app(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert("tauri:options".into(), json!({ "application": app() }));
        caps.insert("browserName".into(), json!("wry"));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("WebDriver session with the app")
    }
}

/// The app's log files (tauri-plugin-log, in the app's data dir), concatenated.
fn app_log(harness: &Harness) -> String {
    let logs = harness.data_dir().join("logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the page shows, read in one script call.
#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Page {
    status: String,
    /// Read only through `Debug`, when a wait times out.
    #[allow(dead_code)]
    status_text: String,
    loaded: bool,
    titles: Vec<String>,
    snippets: Vec<String>,
    /// The highlighted words of search snippets.
    marks: Vec<String>,
    #[allow(dead_code)]
    error: String,
    restarts: u32,
    /// What the status line said when the restart was announced.
    restart_text: String,
    first_notes_ms: Option<u64>,
}

async fn page(client: &Client) -> Page {
    let value = client
        .execute(
            r#"const notes = [...document.querySelectorAll('#notes li.note')];
               const err = document.getElementById('error');
               return {
                 status: document.getElementById('status').dataset.state || '',
                 statusText: document.getElementById('status').textContent,
                 loaded: document.getElementById('notes').dataset.loaded === 'true',
                 titles: notes.map(n => n.querySelector('.title').textContent),
                 snippets: notes.map(n => (n.querySelector('.snippet') || {}).textContent || ''),
                 marks: [...document.querySelectorAll('#notes .snippet mark')].map(m => m.textContent),
                 error: err.hidden ? '' : err.textContent,
                 restarts: Number(document.body.dataset.restarts || 0),
                 restartText: document.body.dataset.restartText || '',
                 firstNotesMs: document.body.dataset.firstNotesMs ? Number(document.body.dataset.firstNotesMs) : null,
               };"#,
            vec![],
        )
        .await
        .expect("reading the page");
    serde_json::from_value(value).expect("page state")
}

/// Polls the page until `ok` holds; on timeout fails with what the page last showed.
async fn until(client: &Client, what: &str, ok: impl Fn(&Page) -> bool) -> Page {
    let start = Instant::now();
    loop {
        let p = page(client).await;
        if ok(&p) {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; the page shows {p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn type_into(client: &Client, id: &str, text: &str) {
    eprintln!("typing into #{id}");
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("send_keys");
}

async fn click(client: &Client, css: &str) {
    eprintln!("clicking {css}");
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Live `pykiln-notes` processes of this test: their `--db` is under our home.
fn sidecar_pids(home: &Path) -> Vec<i32> {
    let home = home.to_string_lossy();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let args = cmdline(pid);
            args.first().is_some_and(|a| a.ends_with("pykiln-notes"))
                && args.iter().any(|a| a.starts_with(home.as_ref()))
                && !is_zombie(pid)
        })
        .collect()
}

/// Live app processes of this test: the app binary with our HOME in its environment.
fn app_pids(home: &Path) -> Vec<i32> {
    let needle = format!("HOME={}", home.display());
    let app = app();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == app)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&c| c == 0).any(|kv| kv == needle.as_bytes()))
                && !is_zombie(pid)
        })
        .collect()
}

fn one_sidecar(home: &Path) -> i32 {
    let pids = sidecar_pids(home);
    assert_eq!(
        pids.len(),
        1,
        "expected one pykiln-notes process, found {pids:?}"
    );
    pids[0]
}

/// Pixel statistics of a screenshot.
struct Shot {
    width: u32,
    height: u32,
    colours: usize,
    /// Share of pixels in the header's accent colour (#d95d27).
    accent: f64,
    /// Pixels in the search highlight's colour (#f6d9c8): only a search result has it.
    highlight: usize,
}

fn measure(png_bytes: &[u8]) -> Shot {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("screenshot pixels");
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let near = |p: &[u8], rgb: [u8; 3]| (0..3).all(|i| p[i].abs_diff(rgb[i]) < 8);
    Shot {
        width: info.width,
        height: info.height,
        colours: pixels.iter().map(|p| &p[..3]).collect::<HashSet<_>>().len(),
        accent: pixels
            .iter()
            .filter(|p| near(p, [0xd9, 0x5d, 0x27]))
            .count() as f64
            / pixels.len().max(1) as f64,
        highlight: pixels
            .iter()
            .filter(|p| near(p, [0xf6, 0xd9, 0xc8]))
            .count(),
    }
}

/// A screenshot of the search result as painted: WebKit's snapshot can lag the DOM
/// (one showed the query half typed), so it is retaken until the highlight shows.
/// Then: not blank, styled (the header's colour over a real area), the match marked.
/// The marked word "glaze" paints ~600 pixels of the highlight colour; frames without
/// it have ~150 from anti-aliased edges elsewhere.
const MIN_HIGHLIGHT: usize = 400;

async fn screenshot_of_search(client: &Client, path: &Path) {
    let start = Instant::now();
    let mut taken = 0;
    let (png, shot) = loop {
        taken += 1;
        let png = client.screenshot().await.expect("screenshot");
        let shot = measure(&png);
        if shot.highlight >= MIN_HIGHLIGHT || start.elapsed() > Duration::from_secs(20) {
            break (png, shot);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    std::fs::write(path, &png).expect("writing the screenshot");
    eprintln!(
        "screenshot {} (taken {taken}x): {}x{}, {} colours, {:.1}% accent, {} highlight pixels",
        path.display(),
        shot.width,
        shot.height,
        shot.colours,
        100.0 * shot.accent,
        shot.highlight
    );
    assert!(
        shot.width >= 300 && shot.height >= 200,
        "the window is tiny: {}x{}",
        shot.width,
        shot.height
    );
    assert!(
        shot.colours >= 20,
        "the screenshot {} looks blank: {} colours",
        path.display(),
        shot.colours
    );
    assert!(
        shot.accent >= 0.02,
        "the header's colour covers under 2% of {}: the page did not render",
        path.display()
    );
    assert!(
        shot.highlight >= MIN_HIGHLIGHT,
        "no highlighted match in {}: the search result was never painted",
        path.display()
    );
}

/// Closes the app's window the way a window manager does: a `WM_DELETE_WINDOW` client
/// message to the top-level window whose `_NET_WM_PID` is the app. (WebDriver's "close
/// window" only tears down the web view: the Tauri app then keeps running, and
/// WebKitWebDriver kills it.) False when the app has no such window (any more).
fn close_like_a_window_manager(display: &str, app_pid: i32) -> bool {
    use x11rb::connection::Connection;
    use x11rb::errors::ReplyError;
    use x11rb::protocol::xproto::{
        AtomEnum, ClientMessageEvent, ConnectionExt, EventMask, MapState,
    };
    let (conn, screen) = x11rb::connect(Some(display)).expect("connecting to the X display");
    let root = conn.setup().roots[screen].root;
    let atom = |name: &str| {
        conn.intern_atom(false, name.as_bytes())
            .map_err(ReplyError::from)
            .and_then(|c| c.reply())
            .map(|r| r.atom)
            .unwrap_or_else(|e| panic!("atom {name}: {e}"))
    };
    let (protocols, delete, net_wm_pid) = (
        atom("WM_PROTOCOLS"),
        atom("WM_DELETE_WINDOW"),
        atom("_NET_WM_PID"),
    );
    let property = |window, name, kind: AtomEnum| -> Vec<u32> {
        conn.get_property(false, window, name, kind, 0, 64)
            .ok()
            .and_then(|c| c.reply().ok())
            .and_then(|r| r.value32().map(|v| v.collect()))
            .unwrap_or_default()
    };
    let mut windows = vec![root];
    let mut target = None;
    while let Some(window) = windows.pop() {
        // GDK's client-leader window carries the same pid and protocols but is never
        // mapped, and tooltips are override-redirect popups: the window a user closes
        // is the viewable, managed one.
        let viewable = || {
            conn.get_window_attributes(window)
                .map_err(ReplyError::from)
                .and_then(|c| c.reply())
                .is_ok_and(|a| a.map_state == MapState::VIEWABLE && !a.override_redirect)
        };
        let titled = || {
            conn.get_property(false, window, AtomEnum::WM_NAME, AtomEnum::STRING, 0, 64)
                .map_err(ReplyError::from)
                .and_then(|c| c.reply())
                .is_ok_and(|r| r.value == WINDOW_TITLE.as_bytes())
        };
        if property(window, net_wm_pid, AtomEnum::CARDINAL) == [app_pid as u32]
            && property(window, protocols, AtomEnum::ATOM).contains(&delete)
            && viewable()
            && titled()
        {
            target = Some(window);
            break;
        }
        if let Ok(tree) = conn
            .query_tree(window)
            .map_err(ReplyError::from)
            .and_then(|c| c.reply())
        {
            windows.extend(tree.children);
        }
    }
    let Some(window) = target else {
        return false;
    };
    let event = ClientMessageEvent::new(
        32,
        window,
        protocols,
        [delete, x11rb::CURRENT_TIME, 0, 0, 0],
    );
    conn.send_event(false, window, EventMask::NO_EVENT, event)
        .and_then(|_| conn.flush())
        .expect("sending WM_DELETE_WINDOW");
    true
}

async fn wait_gone(what: &str, pids: impl Fn() -> Vec<i32>) {
    let start = Instant::now();
    loop {
        let left = pids();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: still running after 15 s: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_window_end_to_end() {
    let harness = Harness::start();
    let home = harness.home.path().to_owned();

    // 1. First start: the window comes up, the server becomes ready, the (empty) list shows.
    let opened = Instant::now();
    let client = harness.open_app().await;
    let p = until(&client, "the first list", |p| {
        p.status == "ready" && p.loaded && p.first_notes_ms.is_some()
    })
    .await;
    eprintln!(
        "first start: notes shown {} ms after app start (app's own clock); {} ms after the WebDriver session request",
        p.first_notes_ms.map_or("?".into(), |ms| ms.to_string()),
        opened.elapsed().as_millis()
    );
    assert!(p.titles.is_empty(), "a fresh data dir has no notes: {p:?}");
    assert!(
        harness.data_dir().join("notes.db").is_file(),
        "the database is in the app data dir"
    );

    // 2. Add two notes through the form.
    for (title, body, tags) in [
        (
            "Kiln log",
            "Cone 6 glaze firing reached 1222 °C after nine hours",
            "pottery, firing",
        ),
        ("Groceries", "eggs, flour, coffee", "home"),
    ] {
        type_into(&client, "title", title).await;
        type_into(&client, "body", body).await;
        type_into(&client, "tags", tags).await;
        click(&client, "#add").await;
        until(&client, &format!("'{title}' in the list"), |p| {
            p.titles.iter().any(|t| t == title)
        })
        .await;
    }

    // 3. Full-text search finds the one that mentions the glaze.
    type_into(&client, "query", "glaze").await;
    click(&client, "#search").await;
    let p = until(&client, "search results for 'glaze'", |p| {
        p.titles == ["Kiln log"]
    })
    .await;
    assert!(
        p.snippets[0].contains("glaze firing"),
        "the snippet: {:?}",
        p.snippets
    );
    assert_eq!(p.marks, ["glaze"], "the match is highlighted");
    let shot = std::env::var_os("PYKILN_TAURI_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap_or(Path::new("."));
            target.join("tauri-notes-window.png")
        });
    screenshot_of_search(&client, &shot).await;

    // 4. Kill the server: the window says it restarts, then everything works again.
    let first = one_sidecar(&home);
    // SAFETY: kill(2) of the sidecar this test's app started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let p = until(&client, "a restart after SIGKILL", |p| {
        p.restarts >= 1 && p.status == "ready"
    })
    .await;
    assert_eq!(p.restarts, 1, "one kill, one restart");
    assert!(
        p.restart_text.contains("killed by signal 9")
            && p.restart_text.contains("restarting in 250 ms"),
        "the window said why and when: {:?}",
        p.restart_text
    );
    let second = one_sidecar(&home);
    assert_ne!(first, second, "a new server process");
    click(&client, "#clear").await;
    until(&client, "both notes after the restart", |p| {
        p.titles.len() == 2
    })
    .await;

    // 5. Delete one.
    client
        .execute(
            "[...document.querySelectorAll('#notes li.note')].find(li => li.querySelector('.title').textContent === 'Groceries').querySelector('button.delete').click()",
            vec![],
        )
        .await
        .expect("clicking delete");
    until(&client, "'Groceries' deleted", |p| p.titles == ["Kiln log"]).await;

    // 6. Close the window: the app quits and ends its server in order.
    harness.quit_app(client, Quit::CloseWindow).await;
    assert_eq!(
        app_log(&harness).matches("notes server: stopped").count(),
        1,
        "the app ended the server itself on window close"
    );

    // 7. Start again: the notes persisted (and the deletion too).
    let client = harness.open_app().await;
    let p = until(&client, "the list after a restart of the app", |p| {
        p.status == "ready" && p.loaded && p.first_notes_ms.is_some()
    })
    .await;
    assert_eq!(p.titles, ["Kiln log"], "notes persist across app restarts");
    eprintln!(
        "second start: notes shown {} ms after app start",
        p.first_notes_ms.map_or("?".into(), |ms| ms.to_string())
    );

    // 8. SIGTERM to the app (a logout, `kill`, a service manager): no orphan either.
    harness.quit_app(client, Quit::Signal(libc::SIGTERM)).await;
    assert_eq!(
        app_log(&harness).matches("notes server: stopped").count(),
        2,
        "ended in order on SIGTERM"
    );

    // 9. The app killed outright (a crash, the OOM killer): the kernel's parent-death
    // signal ends the server, nothing is left running.
    let client = harness.open_app().await;
    until(&client, "the third start", |p| p.status == "ready").await;
    harness.quit_app(client, Quit::Signal(libc::SIGKILL)).await;

    // 10. The server's stderr reached the app's log, and so did the restart.
    let log = app_log(&harness);
    let logs = harness.data_dir().join("logs");
    assert!(
        log.contains(&format!("[pid {first}]")) && log.contains("archive opened"),
        "the first server's stderr lines are in the log {}:\n{log}",
        logs.display()
    );
    assert!(
        log.contains("killed by signal 9"),
        "the crash is in the log:\n{log}"
    );
    assert!(
        log.contains("SIGTERM received"),
        "the quit is in the log:\n{log}"
    );
}
