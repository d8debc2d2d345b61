//! A notes window over the pykiln-built `pykiln-notes` MCP server, shipped as a Tauri
//! sidecar: the page calls the commands below, they call the server's tools over MCP.

mod sidecar;

use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tauri::{AppHandle, Emitter, Manager, RunEvent, State};

pub use sidecar::{Sidecar, Spec, Status};

/// The sidecar's name in `bundle.externalBin` (without the target-triple suffix).
const SIDECAR: &str = "pykiln-notes";

/// When `run` began: the reference for "app start → first notes shown".
static STARTED: OnceLock<Instant> = OnceLock::new();

/// A note as the list and search tools return it (search adds `snippet`).
#[derive(Debug, Deserialize, Serialize)]
pub struct Note {
    id: i64,
    title: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snippet: Option<String>,
}

fn args(pairs: Value) -> serde_json::Map<String, Value> {
    match pairs {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn notes(tool: &str, value: Value) -> Result<Vec<Note>, String> {
    serde_json::from_value(value)
        .map_err(|e| format!("{tool}: unexpected answer from the server: {e}"))
}

#[tauri::command]
async fn list_notes(sidecar: State<'_, Sidecar>) -> Result<Vec<Note>, String> {
    notes(
        "list_notes",
        sidecar
            .call("list_notes", args(json!({"limit": 200})))
            .await?,
    )
}

#[tauri::command]
async fn search_notes(sidecar: State<'_, Sidecar>, query: String) -> Result<Vec<Note>, String> {
    let value = sidecar
        .call("search_notes", args(json!({"query": query, "limit": 100})))
        .await?;
    notes("search_notes", value)
}

#[tauri::command]
async fn add_note(
    sidecar: State<'_, Sidecar>,
    title: String,
    body: String,
    tags: Vec<String>,
) -> Result<i64, String> {
    let value = sidecar
        .call(
            "add_note",
            args(json!({"title": title, "body": body, "tags": tags})),
        )
        .await?;
    value
        .as_i64()
        .ok_or_else(|| format!("add_note: expected the new note's id, got {value}"))
}

#[tauri::command]
async fn delete_note(sidecar: State<'_, Sidecar>, id: i64) -> Result<bool, String> {
    let value = sidecar.call("delete_note", args(json!({"id": id}))).await?;
    Ok(value.as_bool().unwrap_or(false))
}

#[tauri::command]
fn sidecar_status(sidecar: State<'_, Sidecar>) -> Status {
    sidecar.status()
}

/// The page reports its first rendered list; returns ms since the app started.
#[tauri::command]
fn first_notes_shown() -> u64 {
    let ms = STARTED.get().map_or(0, |t| t.elapsed().as_millis() as u64);
    log::info!("first notes shown {ms} ms after app start");
    ms
}

/// Starts the sidecar with its database in the app's data directory.
fn start_sidecar(app: &AppHandle) -> Result<Sidecar, Box<dyn std::error::Error>> {
    let data = app.path().app_data_dir()?;
    std::fs::create_dir_all(&data)
        .map_err(|e| format!("cannot create the data directory {}: {e}", data.display()))?;
    let db = data.join("notes.db");
    let spec = Spec::beside_current_exe(SIDECAR, vec![OsString::from("--db"), db.into()])?;
    log::info!("notes server: {}", spec.program.display());
    let events = app.clone();
    Ok(Sidecar::start(spec, move |status| {
        if let Err(e) = events.emit("sidecar", status) {
            log::warn!("cannot tell the page the server's status: {e}");
        }
    }))
}

/// SIGTERM, SIGINT and SIGHUP quit the app the same way closing the window does, so
/// the server is ended in order (by default they would kill the app and leave the
/// server to notice its closed stdin on its own).
#[cfg(unix)]
fn quit_on_signals(app: AppHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    tauri::async_runtime::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            log::warn!("cannot install signal handlers: a signal will kill the app without ending the server in order");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        log::info!("{name} received: quitting");
        app.exit(0);
    });
}

/// Size at which the app's log file is rotated.
const LOG_FILE_BYTES: u128 = 1 << 20;
/// Log files kept (the current one included): at most ~5 MB of logs.
const LOG_FILES: usize = 5;

/// Builds and runs the app until it quits.
pub fn run() {
    STARTED.get_or_init(Instant::now);
    let app = tauri::Builder::default()
        .plugin(
            tauri_plugin_log::Builder::new()
                .targets([
                    tauri_plugin_log::Target::new(tauri_plugin_log::TargetKind::Stderr),
                    tauri_plugin_log::Target::new(tauri_plugin_log::TargetKind::LogDir {
                        file_name: None,
                    }),
                ])
                .level(log::LevelFilter::Info)
                // The server's stderr lands here too; the plugin's default (one 40 kB
                // file, deleted when full) lost a debug-level start-up within a minute.
                .max_file_size(LOG_FILE_BYTES)
                .rotation_strategy(tauri_plugin_log::RotationStrategy::KeepSome(LOG_FILES))
                .build(),
        )
        .setup(|app| {
            let sidecar = start_sidecar(app.handle())?;
            app.manage(sidecar);
            #[cfg(unix)]
            quit_on_signals(app.handle().clone());
            Ok(())
        })
        .on_window_event(|window, event| {
            if let tauri::WindowEvent::CloseRequested { .. } = event {
                log::info!("window {} closed: quitting", window.label());
            }
        })
        .invoke_handler(tauri::generate_handler![
            list_notes,
            search_notes,
            add_note,
            delete_note,
            sidecar_status,
            first_notes_shown
        ])
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("tauri-notes: cannot start: {e}");
            std::process::exit(1);
        }
    };
    app.run(|app, event| {
        if let RunEvent::Exit = event {
            // The last moment with the runtime alive: end the server and wait for it.
            if let Some(sidecar) = app.try_state::<Sidecar>() {
                tauri::async_runtime::block_on(sidecar.shutdown());
            }
        }
    });
}
