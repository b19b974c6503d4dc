// autodbg's dashboard: the job's sessions and processes, consoles, stacks and cast over one websocket.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;
const pending = []; // typed before the websocket opened: sent once it is
let table = null;
let consoleKey = null;

function send(message) {
  const text = JSON.stringify(message);
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(text);
  else if (socket && socket.readyState === WebSocket.CONNECTING) pending.push(text);
}

function age(since) {
  if (typeof since !== "number") return "-";
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - since));
  return seconds < 120 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}

function fill(element, header, rows) {
  element.replaceChildren();
  const head = element.insertRow();
  header.forEach((name) => {
    const cell = document.createElement("th");
    cell.textContent = name;
    head.append(cell);
  });
  rows.forEach(([cells, extra]) => {
    const row = element.insertRow();
    if (extra) row.insertCell().append(extra); // first: a long `where` pushes the last column off
    cells.forEach((text) => { row.insertCell().textContent = text ?? "-"; });
  });
}

function rank(item) {
  if (item.rank === null || item.rank === undefined) return "-";
  return item.world_size ? `${item.rank}/${item.world_size}` : String(item.rank);
}

function render() {
  if (!table) return;
  fill($("sessions"), ["", "job", "rank", "host", "pid", "state", "exception", "where", "age"],
    table.sessions.map((s) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "console";
      button.dataset.key = s.key;
      button.onclick = () => openConsole(s.key);
      return [[s.job, rank(s), s.host, s.pid, s.state, s.exception || "breakpoint()", s.where,
        age(s.started)], button];
    }));
  fill($("processes"), ["job", "rank", "host", "pid", "age"],
    table.processes.map((p) => [[p.job, rank(p), p.host, p.pid, age(p.registered)]]));
  $("status").textContent = table.error ? `autodbg: ${table.error}` :
    `${table.sessions.length} session(s), ${table.processes.length} process(es)`;
}

function output(text) {
  const out = $("output");
  out.append(text);
  out.scrollTop = out.scrollHeight;
}

function openConsole(key) {
  if (consoleKey) send({ type: "close", key: consoleKey });
  consoleKey = key;
  $("console-of").textContent = key;
  $("output").replaceChildren();
  $("input").disabled = false;
  $("input").placeholder = "debugger command; Enter sends it";
  send({ type: "open", key });
  $("input").focus();
}

function connect() {
  socket = new WebSocket(`ws://${location.host}/ws`);
  socket.onopen = () => {
    $("status").textContent = "connected";
    for (const text of pending.splice(0)) socket.send(text);
  };
  socket.onclose = () => { $("status").textContent = "disconnected (reload to reconnect)"; };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "table") { table = message; render(); }
    else if (message.type === "stacks") $("stacks").textContent = message.text;
    else if (message.type === "cast") $("cast").textContent = message.text;
    else if (message.type === "console" && message.key === consoleKey) output(message.text);
    else if (message.type === "console-end" && message.key === consoleKey) {
      output("\n[console closed]\n");
      $("input").disabled = true;
      consoleKey = null;
    }
  };
}

$("console-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!consoleKey) return;
  const text = $("input").value;
  output(`${text}\n`); // the session echoes nothing to a line client: the page shows what was sent
  send({ type: "input", key: consoleKey, text });
  $("input").value = "";
});
$("stacks-button").addEventListener("click", () => {
  $("stacks").textContent = "…";
  send({ type: "stacks" });
});
$("cast-form").addEventListener("submit", (event) => {
  event.preventDefault();
  $("cast").textContent = "…";
  send({ type: "cast", ranks: $("cast-ranks").value, command: $("cast-command").value });
});
setInterval(render, 5000); // ages move on between two tables
connect();
