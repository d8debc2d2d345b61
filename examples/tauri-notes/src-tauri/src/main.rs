// No console window on Windows release builds (the sidecar's output goes to the log).
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    tauri_notes_lib::run()
}
