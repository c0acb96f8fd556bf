// Playground page: a Telegram-like private chat with the real bot, through the local Bot API.
// Bot text arrives as a tree of text leaves and entity nodes (built server-side from Telegram's
// entities) and becomes DOM via createElement/textContent only: never innerHTML of bot text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  bot: { username: "bot", first_name: "Bot" },
  users: [],
  current: null,        // user id the page acts as
  unread: new Map(),    // user id -> count of bot messages not seen
  lastText: new Map(),  // user id -> preview line
  inlineQueryId: null,  // the inline query whose answer we are waiting for
  inlineQuery: "",
  inlineSeq: 0,         // bumped per query sent (and on close): a late POST reply is ignored
  earlyAnswers: new Map(),  // query id -> answer that arrived before its POST returned
  replyTo: null,        // {id, preview, placeholder}: the composer replies to this bot message
  statusTimer: null,
  prevStats: new Map(),
};

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------ rich text

const ENTITY_TAGS = {
  bold: "b", italic: "i", underline: "u", strikethrough: "s", code: "code",
  blockquote: "blockquote", expandable_blockquote: "blockquote",
};

function plainText(nodes) {
  return (nodes || []).map((n) => ("text" in n ? n.text : plainText(n.children))).join("");
}

function renderNodes(nodes, parent) {
  for (const node of nodes || []) {
    if ("text" in node) {
      parent.appendChild(document.createTextNode(node.text));
      continue;
    }
    let element;
    const type = node.type;
    if (ENTITY_TAGS[type]) {
      element = el(ENTITY_TAGS[type]);
    } else if (type === "pre") {
      element = el("pre");
      const code = el("code");
      if (node.language) code.dataset.language = node.language;
      renderNodes(node.children, code);
      parent.appendChild(element);
      element.appendChild(code);
      continue;
    } else if ((type === "text_link" || type === "url" || type === "email") && node.url) {
      element = el("a");
      element.href = node.url;  // only http(s)/tg/mailto reach here (checked server-side)
      element.target = "_blank";
      element.rel = "noopener noreferrer";
    } else if (type === "spoiler") {
      element = el("span", "spoiler");
      element.title = "spoiler: click to reveal";
      element.addEventListener("click", () => element.classList.add("shown"));
    } else if (type === "bot_command") {
      element = el("span", "cmd");
      const command = plainText(node.children);
      element.addEventListener("click", () => sendText(command));
    } else if (type === "mention" || type === "hashtag" || type === "cashtag") {
      element = el("span", type === "mention" ? "mention" : "hashtag");
    } else {
      element = el("span");
    }
    renderNodes(node.children, element);
    parent.appendChild(element);
  }
}

// ------------------------------------------------------------------ messages

function timeOf(unix) {
  const d = new Date(unix * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

function keyboardOf(message) {
  const rows = message.buttons || [];
  if (!rows.length) return null;
  const keyboard = el("div", "keyboard");
  for (const row of rows) {
    const rowEl = el("div", "kb-row");
    for (const button of row) {
      const b = el("button", "kb-btn", button.text);
      b.type = "button";
      b.dataset.kind = button.kind;
      if (button.kind === "url") b.appendChild(el("span", "kb-icon", "↗"));
      if (button.kind === "switch_inline") b.appendChild(el("span", "kb-icon", "@"));
      b.addEventListener("click", () => onButton(message, button, b));
      rowEl.appendChild(b);
    }
    keyboard.appendChild(rowEl);
  }
  return keyboard;
}

function fillMessage(wrapper, message) {
  // Re-fills an existing wrapper, so an edit keeps the same element (as Telegram's UI does).
  wrapper.replaceChildren();
  wrapper.className = `msg ${message.from_bot ? "in" : "out"}`;
  wrapper.dataset.id = String(message.id);
  wrapper.dataset.edited = message.edited ? "1" : "0";
  const bubble = el("div", "bubble");
  const body = el("div", "body");
  if (message.via) body.appendChild(el("span", "via", `via @${message.via}`));
  if (message.reply_to) {
    // A reply quotes the first line of the message it answers, as Telegram shows it.
    const quoted = messageElement(message.reply_to)?.querySelector(".content");
    const line = quoted ? quoted.textContent.split("\n")[0] : "";
    body.appendChild(el("span", "quote", line || "…"));
  }
  if (message.photo) {
    bubble.classList.add("has-photo");
    const img = el("img", "photo");
    img.alt = "picture from the bot";
    img.src = message.photo.url;
    if (message.photo.width && message.photo.height) {
      img.width = message.photo.width;
      img.height = message.photo.height;
    }
    bubble.appendChild(img);
  }
  const rich = message.photo ? message.caption : message.text;
  const content = el("span", "content");
  renderNodes(rich, content);
  body.appendChild(content);
  const meta = el("span", "meta", `${message.edited ? "edited " : ""}${timeOf(message.date)}`);
  body.appendChild(meta);
  if (message.photo && !(rich && rich.length) && !message.via) {
    bubble.classList.add("photo-only");
    bubble.appendChild(meta);
  } else {
    bubble.appendChild(body);
  }
  if (message.from_bot && message.id > 0) {
    const reply = el("button", "reply-btn", "↩");
    reply.type = "button";
    reply.title = "Reply to this message";
    reply.addEventListener("click", () => setReply(message));
    wrapper.appendChild(reply);
  }
  wrapper.appendChild(bubble);
  const keyboard = keyboardOf(message);
  if (keyboard) wrapper.appendChild(keyboard);
}

function messageElement(id) {
  return $("messages").querySelector(`.msg[data-id="${CSS.escape(String(id))}"]`);
}

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
  // Pictures load after layout: keep the newest message in view when they do.
  for (const img of box.querySelectorAll("img.photo")) {
    if (!img.complete) img.addEventListener("load", () => { box.scrollTop = box.scrollHeight; }, { once: true });
  }
}

function addMessage(message) {
  if (message.deleted) return;
  const box = $("messages");
  box.querySelector(".empty-chat")?.remove();
  let wrapper = messageElement(message.id);
  const stick = nearBottom();
  if (!wrapper) {
    wrapper = el("div");
    box.appendChild(wrapper);
  }
  fillMessage(wrapper, message);
  if (stick || !message.from_bot) scrollToBottom();
}

function editMessage(message) {
  const wrapper = messageElement(message.id);
  if (!wrapper) return addMessage(message);
  fillMessage(wrapper, message);
  wrapper.classList.remove("flash");
  void wrapper.offsetWidth;  // restart the highlight animation
  wrapper.classList.add("flash");
}

function showEmpty() {
  const box = $("messages");
  const empty = el("div", "empty-chat");
  empty.appendChild(el("div", null, `This is ${currentUser().first_name}'s chat with the bot.`));
  empty.appendChild(el("div", null, "Press Start, or type /start."));
  const start = el("button", "kb-btn", "START");
  start.type = "button";
  start.addEventListener("click", () => sendText("/start"));
  empty.appendChild(start);
  box.appendChild(empty);
}

async function loadChat() {
  const userId = state.current;
  const data = await api(`/playground/api/chat/${userId}`);
  if (userId !== state.current) return;
  $("messages").replaceChildren();
  const visible = data.messages.filter((m) => !m.deleted);
  visible.forEach(addMessage);
  if (!visible.length) showEmpty();
  // A ForceReply the person has not answered yet: the reply is still open, as in a client.
  const last = visible[visible.length - 1];
  clearReply();
  if (last && last.from_bot && last.force_reply) setReply(last);
  scrollToBottom();
}

// ------------------------------------------------------------------ replies

function setReply(message) {
  // What a Telegram client does for ForceReply (or the person's "Reply"): the next message
  // sent from the composer is a reply to this one, and the bot sees reply_to_message.
  const preview = plainText(message.photo ? message.caption : message.text).split("\n")[0];
  state.replyTo = { id: message.id, placeholder: (message.force_reply || {}).placeholder || "" };
  $("reply-preview").textContent = preview || "(picture)";
  $("reply-bar").hidden = false;
  $("text").placeholder = state.replyTo.placeholder || "Reply…";
  $("text").focus();
  scrollToBottom();
}

function clearReply() {
  state.replyTo = null;
  $("reply-bar").hidden = true;
  $("text").placeholder = $("text").dataset.placeholder;
}

// ------------------------------------------------------------------ users

function currentUser() {
  return state.users.find((u) => u.id === state.current) || state.users[0];
}

function initials(name) {
  return [...name][0].toUpperCase();
}

const AVATAR_COLORS = ["#e17076", "#7bc862", "#65aadd", "#a695e7", "#ee7aae", "#6ec9cb", "#faa774"];

function renderUsers() {
  const list = $("user-list");
  list.replaceChildren();
  state.users.forEach((user, index) => {
    const item = el("li", "user-item");
    item.dataset.userId = String(user.id);
    item.setAttribute("role", "button");
    item.title = `Act as ${user.label}`;
    if (user.id === state.current) item.classList.add("active");
    const avatar = el("div", "avatar", initials(user.first_name));
    avatar.style.background = AVATAR_COLORS[index % AVATAR_COLORS.length];
    const text = el("div", "user-text");
    text.appendChild(el("div", "user-name", user.label));
    text.appendChild(el("div", "user-meta", state.lastText.get(user.id) || `language: ${user.lang}`));
    item.append(avatar, text);
    const unread = state.unread.get(user.id) || 0;
    if (unread) item.appendChild(el("span", "badge on", String(unread)));
    item.addEventListener("click", () => switchUser(user.id));
    list.appendChild(item);
  });
  const acting = $("acting-as");
  acting.replaceChildren(document.createTextNode("you are "), el("b", null, currentUser().label));
}

async function switchUser(userId) {
  if (userId === state.current) return;
  state.current = userId;
  state.unread.delete(userId);
  closeInline();
  renderUsers();
  await loadChat();
  $("text").focus();
}

// ------------------------------------------------------------------ actions

async function sendText(text, replyTo = null) {
  text = text.trim();
  if (!text) return;
  const body = { user_id: state.current, text };
  if (replyTo !== null) body.reply_to = replyTo;
  try {
    await api("/playground/api/send", body);
  } catch (error) {
    toast(String(error.message || error));
  }
}

async function onButton(message, button, element) {
  if (button.kind === "callback") {
    if (message.id < 0) return toast("buttons of inline messages are not simulated here");
    element.classList.add("pending");
    try {
      await api("/playground/api/press", {
        user_id: state.current, message_id: message.id, data: button.data,
      });
    } catch (error) {
      element.classList.remove("pending");
      toast(String(error.message || error));
    }
  } else if (button.kind === "url" && button.url) {
    window.open(button.url, "_blank", "noopener");
  } else if (button.kind === "switch_inline") {
    const input = $("text");
    input.value = `@${state.bot.username} ${button.query || ""}`;
    input.focus();
    onInput();
  }
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(box._timer);
  box._timer = setTimeout(() => { box.hidden = true; }, 2600);
}

function alertBox(text) {
  $("alert-text").textContent = text;
  $("alert").hidden = false;
}

function setStatus(text, busy) {
  const status = $("bot-status");
  status.textContent = text;
  status.classList.toggle("busy", Boolean(busy));
}

const ACTIONS = {
  typing: "typing…", upload_photo: "sending a photo…", choose_sticker: "choosing a sticker…",
};

// ------------------------------------------------------------------ inline mode

let inlineTimer = null;

function inlineQueryOf(text) {
  // "@<bot username> query" (or the shorthand "@bot query") switches the composer to inline mode.
  const match = /^@(\w+)\s([\s\S]*)$/.exec(text);
  if (!match) return null;
  const name = match[1].toLowerCase();
  return name === state.bot.username.toLowerCase() || name === "bot" ? match[2].trim() : null;
}

function onInput() {
  const text = $("text").value;
  const query = inlineQueryOf(text);
  $("composer").classList.toggle("inline-mode", query !== null);
  clearTimeout(inlineTimer);
  if (query === null) return closeInline();
  // Like Telegram: the query goes out after a short pause in typing.
  inlineTimer = setTimeout(() => runInline(query), 350);
}

async function runInline(query) {
  const seq = ++state.inlineSeq;
  state.inlineQueryId = null;
  $("inline-panel").hidden = false;
  $("inline-title").textContent = `@${state.bot.username} ${query} — asking the bot…`;
  try {
    const answer = await api("/playground/api/inline", { user_id: state.current, query });
    if (seq !== state.inlineSeq) return;  // a newer query (or closing the panel) replaced it
    state.inlineQueryId = answer.inline_query_id;
    state.inlineQuery = query;
    // The bot may answer (over the event stream) before this POST returns: show that answer.
    const early = state.earlyAnswers.get(answer.inline_query_id);
    state.earlyAnswers.clear();
    if (early) showInlineResults(early);
  } catch (error) {
    if (seq === state.inlineSeq) $("inline-title").textContent = String(error.message || error);
  }
}

function onInlineResults(event) {
  if (event.chat_id !== state.current) return;
  if (event.query_id === state.inlineQueryId) return showInlineResults(event);
  // Not (yet) the query we wait for: keep it until its POST returns (a few at most).
  state.earlyAnswers.set(event.query_id, event);
  while (state.earlyAnswers.size > 20) state.earlyAnswers.delete(state.earlyAnswers.keys().next().value);
}

function showInlineResults(event) {
  if (event.query_id !== state.inlineQueryId || event.chat_id !== state.current) return;
  const list = $("inline-results");
  list.replaceChildren();
  $("inline-title").textContent = `@${state.bot.username} ${event.query} — ${event.results.length} result(s)`;
  if (!event.results.length) list.appendChild(el("li", "inline-empty", "No results: try a sign, e.g. leo or лев"));
  for (const result of event.results) {
    const item = el("li", "inline-result");
    item.dataset.resultId = result.id;
    let thumb;
    if (result.thumb) {
      thumb = el("img", "inline-thumb");
      thumb.src = result.thumb.url;
      thumb.alt = "";
    } else {
      thumb = el("div", "inline-thumb", "✦");
    }
    const text = el("div", "inline-text");
    text.appendChild(el("div", "inline-kind", result.type === "photo" ? "cached photo" : result.type));
    text.appendChild(el("div", "inline-title", result.title || "(untitled)"));
    text.appendChild(el("div", "inline-desc", result.description));
    item.append(thumb, text);
    item.addEventListener("click", () => chooseInline(result.id));
    list.appendChild(item);
  }
  $("inline-panel").hidden = false;
}

async function chooseInline(resultId) {
  const query = state.inlineQuery;
  closeInline();
  $("text").value = "";
  $("composer").classList.remove("inline-mode");
  try {
    const answer = await api("/playground/api/choose", {
      user_id: state.current, result_id: resultId, query,
    });
    if (answer.message) addMessage(answer.message);
    scrollToBottom();
  } catch (error) {
    toast(String(error.message || error));
  }
}

function closeInline() {
  $("inline-panel").hidden = true;
  $("inline-results").replaceChildren();
  state.inlineSeq++;
  state.inlineQueryId = null;
  state.earlyAnswers.clear();
}

// ------------------------------------------------------------------ live events

function previewOf(message) {
  const text = plainText(message.photo ? message.caption : message.text).split("\n")[0];
  return (message.photo ? "Photo · " : "") + (text || "");
}

let statsSoon = null;

function onEvent(event) {
  const chatId = event.message ? event.message.chat_id : event.chat_id;
  // The bot just did something: show what it cost without waiting for the next tick.
  clearTimeout(statsSoon);
  statsSoon = setTimeout(refreshStats, 400);
  if (event.type === "message" || event.type === "edit") {
    state.lastText.set(chatId, previewOf(event.message));
    if (chatId === state.current) {
      if (event.type === "edit") editMessage(event.message);
      else addMessage(event.message);
      if (event.message.from_bot) setStatus("bot", false);
      if (event.type === "message" && event.message.force_reply) setReply(event.message);
    } else if (event.type === "message" && event.message.from_bot) {
      state.unread.set(chatId, (state.unread.get(chatId) || 0) + 1);
    }
    renderUsers();
  } else if (event.type === "delete" && chatId === state.current) {
    messageElement(event.message_id)?.remove();
  } else if (event.type === "toast" && chatId === state.current) {
    for (const b of document.querySelectorAll(".kb-btn.pending")) b.classList.remove("pending");
    if (event.text) (event.alert ? alertBox : toast)(event.text);
  } else if (event.type === "inline_results") {
    onInlineResults(event);
  } else if (event.type === "action" && chatId === state.current) {
    setStatus(ACTIONS[event.action] || "working…", true);
    clearTimeout(state.statusTimer);
    state.statusTimer = setTimeout(() => setStatus("bot", false), 5000);
  }
}

function connectEvents() {
  const source = new EventSource("/playground/api/events");
  let wasBroken = false;
  source.onopen = () => {
    document.body.dataset.live = "1";
    if (wasBroken) loadChat();  // catch up on what happened while disconnected
    wasBroken = false;
  };
  source.onmessage = (message) => onEvent(JSON.parse(message.data));
  source.onerror = () => {
    document.body.dataset.live = "0";
    wasBroken = true;
  };
}

// ------------------------------------------------------------------ stats panel

function setNum(id, value) {
  const node = $(id);
  const text = String(value);
  if (node.textContent !== text) {
    node.textContent = text;
    node.classList.remove("bump");
    void node.offsetWidth;
    node.classList.add("bump");
  }
}

function kvList(id, entries, empty) {
  const list = $(id);
  const items = Object.entries(entries || {}).filter(([, v]) => v > 0);
  const key = JSON.stringify(items);
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren();
  if (!items.length) list.appendChild(el("li", "muted", empty));
  for (const [k, v] of items) {
    const li = el("li");
    li.append(el("span", "k", k.replace(":", " · ")), el("span", "v bump", String(v)));
    list.appendChild(li);
  }
}

function renderStats(stats) {
  const images = stats.images || { upload: 0, file_id: 0, fallbacks: 0 };
  setNum("img-upload", images.upload);
  setNum("img-fileid", images.file_id);
  const tg = stats.telegram || {};
  $("img-note").textContent =
    `Telegram side: ${tg.uploads ?? 0} upload(s) received, ${tg.sent_by_file_id ?? 0} file_id re-send(s)` +
    (images.fallbacks ? ` · ${images.fallbacks} stale file_id(s) replaced` : "");

  const cache = stats.cache || { namespaces: [] };
  const rows = $("cache-rows");
  const key = JSON.stringify(cache.namespaces);
  if (rows.dataset.key !== key) {
    rows.dataset.key = key;
    rows.replaceChildren();
    if (!cache.namespaces.length) {
      const td = el("td", "muted", "no lookups yet");
      td.colSpan = 5;
      rows.appendChild(el("tr")).appendChild(td);
    }
    for (const ns of cache.namespaces) {
      const tr = el("tr");
      tr.dataset.namespace = ns.namespace;
      const ratio = ns.hit_ratio === null ? "–" : `${Math.round(ns.hit_ratio * 100)}%`;
      const ratioCell = el("td");
      const bar = el("span", "ratio-bar");
      const fill = el("span");
      fill.style.width = `${Math.round((ns.hit_ratio || 0) * 100)}%`;
      bar.appendChild(fill);
      ratioCell.append(bar, document.createTextNode(ratio));
      const prev = state.prevStats.get(ns.namespace) || {};
      const cell = (field) => {
        const td = el("td", prev[field] !== undefined && prev[field] !== ns[field] ? "bump" : "", String(ns[field]));
        td.dataset.field = field;
        return td;
      };
      tr.append(el("td", null, ns.namespace), cell("hit"), cell("miss"), cell("load"), ratioCell);
      rows.appendChild(tr);
      state.prevStats.set(ns.namespace, ns);
    }
  }
  $("cache-ratio").textContent =
    cache.hit_ratio === null || cache.hit_ratio === undefined ? "" : `· ${Math.round(cache.hit_ratio * 100)}% hits · breaker ${cache.breaker}`;

  const generation = {};
  for (const [k, v] of Object.entries(stats.generations || {})) generation[`generated ${k}`] = v;
  for (const [k, v] of Object.entries(stats.jobs || {})) generation[`job ${k}`] = v;
  kvList("gen-list", generation, "nothing yet: precompute runs at start");
  kvList("upd-list", stats.updates, "none");
  kvList("push-list", stats.pushes, "none");

  const activity = $("activity");
  const actKey = JSON.stringify(stats.activity);
  if (activity.dataset.key !== actKey) {
    activity.dataset.key = actKey;
    activity.replaceChildren();
    if (!(stats.activity || []).length) activity.appendChild(el("li", "muted", "nothing yet"));
    for (const call of stats.activity || []) {
      const li = el("li", call.ok ? call.photo || "" : "err");
      li.append(el("span", "m", call.method), el("span", "d", call.detail || (call.ok ? "ok" : "error")));
      activity.appendChild(li);
    }
  }
}

async function refreshStats() {
  try {
    renderStats(await api("/playground/api/stats"));
  } catch (error) {
    /* the bot may be restarting; try again on the next tick */
  }
}

// ------------------------------------------------------------------ start

async function main() {
  $("text").dataset.placeholder = $("text").placeholder;  // restored when a reply ends
  const info = await api("/playground/api/info");
  state.bot = info.bot;
  state.users = info.users;
  state.current = info.users[0].id;
  $("bot-name").textContent = info.bot.first_name;
  setStatus(`bot · @${info.bot.username}`, false);
  renderUsers();
  connectEvents();
  await loadChat();

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text");
    if (inlineQueryOf(input.value) !== null) return;  // inline mode: pick a result instead
    const text = input.value;
    input.value = "";
    const replyTo = state.replyTo ? state.replyTo.id : null;
    clearReply();
    sendText(text, replyTo);
  });
  $("reply-cancel").addEventListener("click", clearReply);
  $("text").addEventListener("input", onInput);
  $("inline-btn").addEventListener("click", () => {
    const input = $("text");
    input.value = `@${state.bot.username} `;
    input.focus();
    onInput();
  });
  $("inline-close").addEventListener("click", () => {
    closeInline();
    $("text").value = "";
    $("composer").classList.remove("inline-mode");
  });
  $("alert-ok").addEventListener("click", () => { $("alert").hidden = true; });
  refreshStats();
  setInterval(refreshStats, 2000);
  document.body.dataset.ready = "1";
}

main().catch((error) => {
  setStatus(`failed to start: ${error.message || error}`, false);
});
