// The page talks only to the app's Tauri commands; the app talks MCP to the sidecar.
"use strict";
const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);
let query = "";           // the search shown, "" = all notes
let firstShown = false;

function showStatus(s) {
  const el = $("status");
  el.className = "status " + s.state;
  el.dataset.state = s.state;
  if (s.state === "ready") {
    el.textContent = "Server ready";
  } else if (s.state === "starting") {
    el.textContent = s.attempt > 1 ? `Restarting the notes server (attempt ${s.attempt})…` : "Starting the notes server…";
  } else if (s.state === "restarting") {
    const delay = s.retry_in_ms < 1000 ? `${s.retry_in_ms} ms` : `${(s.retry_in_ms / 1000).toFixed(1)} s`;
    el.textContent = `Notes server stopped (${s.reason}); restarting in ${delay}…`;
  } else {
    el.textContent = "Notes server stopped";
  }
}

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

// The server marks search matches as [word]; show them as <mark> (as text, never HTML).
function highlighted(snippet) {
  return snippet.split(/(\[[^\]]*\])/).filter(Boolean).map((part) => {
    if (!part.startsWith("[") || !part.endsWith("]")) return document.createTextNode(part);
    const mark = document.createElement("mark");
    mark.textContent = part.slice(1, -1);
    return mark;
  });
}

function render(notes) {
  const list = $("notes");
  list.replaceChildren(...notes.map((n) => {
    const li = document.createElement("li");
    li.className = "note";
    li.dataset.id = n.id;
    const text = document.createElement("div");
    text.className = "text";
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = n.title;
    text.append(title);
    if (n.snippet) {
      const snip = document.createElement("div");
      snip.className = "snippet";
      snip.append(...highlighted(n.snippet));
      text.append(snip);
    }
    for (const t of n.tags || []) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "#" + t;
      text.append(tag);
    }
    const del = document.createElement("button");
    del.className = "delete";
    del.type = "button";
    del.textContent = "Delete";
    del.title = "Delete this note";
    del.addEventListener("click", () => remove(n.id));
    li.append(text, del);
    return li;
  }));
  $("empty").hidden = notes.length > 0;
  $("list-title").textContent = query ? `Search: ${query}` : "All notes";
  list.dataset.loaded = "true";
}

async function refresh() {
  try {
    const notes = query ? await invoke("search_notes", { query }) : await invoke("list_notes");
    render(notes);
    showError("");
    if (!firstShown) {
      firstShown = true;
      document.body.dataset.firstNotesMs = await invoke("first_notes_shown");
    }
  } catch (e) {
    showError(String(e));
  }
}

async function remove(id) {
  try {
    await invoke("delete_note", { id });
  } catch (e) {
    showError(String(e));
  }
  await refresh();
}

$("add-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tags = $("tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  try {
    await invoke("add_note", { title: $("title").value, body: $("body").value, tags });
    $("add-form").reset();
  } catch (e) {
    showError(String(e));
    return;
  }
  await refresh();
});

$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  query = $("query").value.trim();
  await refresh();
});

$("clear").addEventListener("click", async () => {
  query = "";
  $("query").value = "";
  await refresh();
});

listen("sidecar", (ev) => {
  showStatus(ev.payload);
  // Kept for the end-to-end test, which kills the server and expects one restart,
  // announced in the window.
  if (ev.payload.state === "restarting") {
    document.body.dataset.restarts = Number(document.body.dataset.restarts || 0) + 1;
    document.body.dataset.restartText = $("status").textContent;
  }
  if (ev.payload.state === "ready") refresh();
});
// The server may have become ready before this page listened.
invoke("sidecar_status").then((s) => {
  showStatus(s);
  if (s.state === "ready") refresh();
});
