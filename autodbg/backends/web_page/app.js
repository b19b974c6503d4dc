// autodbg's page for one session: console, source, stack and locals over one websocket.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
let historyAt = 0;
let socket = null;
const pending = []; // typed before the websocket opened: sent once it is

function connect() {
  socket = new WebSocket(`ws://${location.host}/ws`);
  socket.onopen = () => {
    $("status").textContent = "connected";
    for (const text of pending.splice(0)) socket.send(text);
  };
  socket.onclose = () => {
    const status = $("status");
    if (!status.classList.contains("ended")) status.textContent = "disconnected";
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "output") output(message.text);
    else if (message.type === "state") show(message);
    else if (message.type === "end") {
      $("status").textContent = "session ended";
      $("status").classList.add("ended");
      $("input").disabled = true;
    }
  };
}

function output(text) {
  const out = $("output");
  out.append(text);
  out.scrollTop = out.scrollHeight;
}

function send(message) {
  const text = JSON.stringify(message);
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(text);
  else if (socket && socket.readyState === WebSocket.CONNECTING) pending.push(text);
}

function show(state) {
  const source = $("source");
  source.replaceChildren();
  $("file").textContent = `${state.source.file}:${state.source.line}`;
  state.source.lines.forEach((text, i) => {
    const number = state.source.first + i;
    const line = document.createElement("span");
    line.className = number === state.source.line ? "line current" : "line";
    line.textContent = `${String(number).padStart(5)}${number === state.source.line ? " ->" : "   "} ${text}`;
    source.append(line);
  });
  const current = source.querySelector(".current");
  if (current) current.scrollIntoView({ block: "center" });
  const stack = $("stack");
  stack.replaceChildren();
  state.stack.forEach((frame, i) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "function";
    name.textContent = frame.function;
    item.append(name, `  ${frame.file}:${frame.line}`);
    item.dataset.index = i;
    if (i === state.current) item.className = "selected";
    item.onclick = () => send({ type: "frame", index: i });
    stack.append(item);
  });
  const locals = $("locals");
  locals.replaceChildren();
  for (const [name, repr] of state.locals) {
    const row = locals.insertRow();
    const key = row.insertCell();
    key.className = "name";
    key.textContent = name;
    row.insertCell().textContent = repr;
  }
}

$("input").addEventListener("keydown", (event) => {
  const input = event.target;
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    const text = input.value;
    if (text.trim()) history.push(text);
    historyAt = history.length;
    send({ type: "command", text });
    input.value = "";
  } else if (event.key === "c" && event.ctrlKey && !input.value) {
    event.preventDefault();
    send({ type: "interrupt" });
  } else if (event.key === "ArrowUp" && !input.value.includes("\n") && historyAt > 0) {
    event.preventDefault();
    input.value = history[--historyAt];
  } else if (event.key === "ArrowDown" && !input.value.includes("\n") && historyAt < history.length) {
    event.preventDefault();
    historyAt += 1;
    input.value = historyAt < history.length ? history[historyAt] : "";
  }
});

connect();
$("input").focus();
