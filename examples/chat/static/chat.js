// The chat page: name picker, rooms, online list, messages, connection state.
// The server side is examples/chat/__init__.py; messages are JSON with a "type".
//
// The page's <html> element configures it: data-ws-port (WebSockets on another
// port), data-ws-path (the socket path before the room, "/chat/" by default) and
// data-user (a logged-in user: the server knows the name, so there is no picker).
import { ReconnectingWebSocket } from "./wsgiws.js";

const $ = (selector) => document.querySelector(selector);
// Per tab (sessionStorage): each tab is its own person, and a reload keeps its name.
const NAME_KEY = "wsgiws-chat-name";
const DEFAULT_ROOMS = ["lobby", "python", "random"];

const config = document.documentElement.dataset;
const USER = config.user || "";
let name = USER || sessionStorage.getItem(NAME_KEY) || "";
let room = roomFromHash();
let joinedOnce = false;
// What the next welcome announces instead of "You joined" (after a change of name).
let nextNotice = null;
let roomCounts = Object.fromEntries(DEFAULT_ROOMS.map((r) => [r, 0]));
let countdown = null;

function roomFromHash() {
  const wanted = decodeURIComponent(location.hash.slice(1)).toLowerCase();
  return /^[a-z0-9_-]{1,32}$/.test(wanted) ? wanted : "lobby";
}

// Same port as the page, unless the server wrote another one into <html data-ws-port>.
function socketURL() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const port = config.wsPort;
  const host = port ? `${location.hostname}:${port}` : location.host;
  const query = USER ? "" : `?name=${encodeURIComponent(name)}`;
  return `${scheme}//${host}${config.wsPath || "/chat/"}${room}${query}`;
}

const socket = new ReconnectingWebSocket(socketURL);

// -- rendering -------------------------------------------------------------------

const COLORS = [
  "#d9485f", "#e8772e", "#c9a000", "#2f9e6e", "#1c9bb0",
  "#4f6ef7", "#8a5cf6", "#c94fa8", "#5f8a2f", "#9a6233",
];

function colorFor(text) {
  let hash = 2166136261; // FNV-1a: similar names get different colours
  for (const ch of text) hash = Math.imul(hash ^ ch.codePointAt(0), 16777619) >>> 0;
  return COLORS[hash % COLORS.length];
}

function avatar(person) {
  const span = document.createElement("span");
  span.className = "avatar";
  span.textContent = [...person][0]?.toUpperCase() ?? "?";
  span.style.background = colorFor(person);
  return span;
}

function scrollDown() {
  const list = $("#messages");
  list.scrollTop = list.scrollHeight;
}

function addNotice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  $("#messages").append(li);
  scrollDown();
}

function addMessage({ name: sender, text, time }) {
  const li = document.createElement("li");
  li.className = sender === name ? "message mine" : "message";
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "sender";
  who.textContent = sender;
  who.style.color = colorFor(sender);
  const when = document.createElement("time");
  const date = new Date(time * 1000);
  when.dateTime = date.toISOString();
  when.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(who, when);
  const p = document.createElement("p");
  p.className = "text";
  p.textContent = text;
  body.append(meta, p);
  li.append(avatar(sender), body);
  $("#messages").append(li);
  scrollDown();
}

function renderOnline(people) {
  const list = $("#online");
  list.replaceChildren(
    ...people.map((person) => {
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.className = "person";
      label.textContent = person;
      li.append(avatar(person), label);
      if (person === name) li.classList.add("me");
      return li;
    }),
  );
  $("#online-count").textContent = String(people.length);
}

function renderRooms() {
  const names = [...new Set([...DEFAULT_ROOMS, ...Object.keys(roomCounts), room])];
  $("#rooms").replaceChildren(
    ...names.map((r) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `#${r}`;
      a.dataset.room = r;
      a.textContent = `# ${r}`;
      if (r === room) a.setAttribute("aria-current", "page");
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = roomCounts[r] ? String(roomCounts[r]) : "";
      a.append(count);
      li.append(a);
      return li;
    }),
  );
}

function renderMe() {
  $(".me").hidden = !name;
  $("#me").textContent = name;
  const me = $("#me-avatar");
  me.textContent = [...name][0]?.toUpperCase() ?? "";
  me.style.background = colorFor(name);
}

function renderRoom() {
  $("#room-name").textContent = room;
  $("#text").placeholder = `Message #${room}`;
  document.title = `#${room} · wsgiws chat`;
  renderRooms();
}

const STATE_TEXT = {
  connecting: "Connecting…",
  open: "Connected",
  closed: "Not connected",
};

function renderState(state, delay) {
  clearInterval(countdown);
  const status = $("#status");
  status.dataset.state = state;
  const open = state === "open";
  $("#text").disabled = !open;
  $("#send").disabled = !open;
  if (state === "waiting") {
    const tick = () => {
      const left = Math.max(0, Math.ceil((socket.retryAt - Date.now()) / 1000));
      $("#status-text").textContent = `Reconnecting in ${left} s…`;
    };
    tick();
    countdown = setInterval(tick, 250);
  } else {
    $("#status-text").textContent = STATE_TEXT[state];
  }
  if (open) $("#text").focus();
}

// -- events from the server ------------------------------------------------------

let wasOpen = false;

socket.addEventListener("statechange", (event) => {
  renderState(event.detail.state, event.detail.delay);
  if (event.detail.state === "open") wasOpen = true;
});

// One notice per outage, not one per failed attempt; the online list goes grey
// until the server confirms it again.
socket.addEventListener("close", () => {
  if (wasOpen && socket.state !== "closed") addNotice("Connection lost. Reconnecting…");
  wasOpen = false;
  $("#online").classList.add("stale");
});

socket.addEventListener("message", (event) => {
  const msg = JSON.parse(event.detail.data);
  switch (msg.type) {
    case "welcome":
      if (msg.history) {
        // The server keeps the room's recent messages: they replace what is shown.
        $("#messages").replaceChildren();
        msg.history.forEach(addMessage);
      }
      if (nextNotice) addNotice(nextNotice);
      else addNotice(joinedOnce ? `Reconnected to #${msg.room}` : `You joined #${msg.room}`);
      nextNotice = null;
      joinedOnce = true;
      $("#online").classList.remove("stale");
      renderOnline(msg.online);
      break;
    case "join":
      addNotice(`${msg.name} joined`);
      renderOnline(msg.online);
      break;
    case "leave":
      addNotice(`${msg.name} left`);
      renderOnline(msg.online);
      break;
    case "message":
      addMessage(msg);
      break;
    case "rooms":
      roomCounts = msg.rooms;
      renderRooms();
      break;
  }
});

// -- user actions ----------------------------------------------------------------

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#text");
  const text = input.value.trim();
  if (text && socket.sendJSON({ text })) input.value = "";
});

$("#new-room").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#new-room-name");
  if (input.checkValidity() && input.value) {
    location.hash = input.value;
    input.value = "";
  }
});

window.addEventListener("hashchange", () => {
  const next = roomFromHash();
  if (next === room) return;
  room = next;
  joinedOnce = false;
  nextNotice = null;
  $("#messages").replaceChildren();
  renderOnline([]);
  renderRoom();
  if (name) socket.reconnect();
});

function askName() {
  $("#name-input").value = name;
  $("#welcome").hidden = false;
  $("#name-input").focus();
}

$("#name-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const picked = $("#name-input").value.trim().slice(0, 24);
  if (!picked) return;
  const changed = picked !== name;
  // Already in the room under another name: one "You joined" was enough.
  if (changed && joinedOnce) nextNotice = `You are now ${picked}`;
  name = picked;
  sessionStorage.setItem(NAME_KEY, name);
  $("#welcome").hidden = true;
  renderMe();
  if (changed || socket.state === "closed") socket.reconnect();
});

$("#rename")?.addEventListener("click", askName);

// -- start -----------------------------------------------------------------------

renderRoom();
renderOnline([]);
renderState("closed");
renderMe();
if (name) {
  socket.open();
} else {
  askName();
}
