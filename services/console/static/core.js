// Shared by every page: configuration, the signed-in session, API calls with the bearer token, formatting, DOM.
// The token lives in sessionStorage (this tab only) and goes in the Authorization header, never in a URL.

const TOKEN_KEY = "paydesk.console.token";
const SESSION_KEY = "paydesk.console.session";

export const state = { config: null, session: null };

export async function loadConfig() {
  const response = await fetch("/config.json");
  state.config = await response.json();
  return state.config;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveSession(answer) {
  sessionStorage.setItem(TOKEN_KEY, answer.token);
  const { token: _omit, ...rest } = answer;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(rest));
  state.session = rest;
}

export function restoreSession() {
  const saved = sessionStorage.getItem(SESSION_KEY);
  state.session = saved && token() ? JSON.parse(saved) : null;
  return state.session;
}

export function clearSession() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SESSION_KEY);
  state.session = null;
}

export function roles() {
  return state.session ? state.session.user.roles : [];
}

export function hasRole(...wanted) {
  const mine = roles();
  return mine.includes("admin") || wanted.some((r) => mine.includes(r));
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.field = problem.field || null;
    this.code = problem.code || null;
  }
}

// `service` is a key of config.services ("payments", "credit_notes", "receipts", "kpi", "collections") or "console".
export function serviceUrl(service, path) {
  const base = service === "console" ? "" : state.config.services[service];
  if (base === null || base === undefined) throw new ApiError(404, { detail: `${service} is not deployed`, code: "not_deployed" });
  return base + path;
}

export async function call(service, path, { method = "GET", body, headers = {}, raw = false, keepalive = false } = {}) {
  const init = { method, headers: { ...headers }, keepalive };
  if (token()) init.headers.Authorization = "Bearer " + token();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(serviceUrl(service, path), init);
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new ApiError(0, { detail: `${service} cannot be reached`, code: "unreachable" });
  }
  if (response.status === 401) {
    clearSession();
    window.dispatchEvent(new CustomEvent("paydesk:signed-out", { detail: "Your session has ended; sign in again." }));
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new ApiError(response.status, problem);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

// Usage tracking of what only the browser measures (the seed's tracking plan), through kpi; never blocks a page.
export function track(event, properties) {
  if (!state.config.services.kpi) return Promise.resolve();
  return call("kpi", "/kpi/usage", { method: "POST", body: { event, ...properties } }).catch(() => {});
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else if (value !== null && value !== undefined && value !== "") search.append(key, value);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

export function idempotencyKey() {
  return crypto.randomUUID();
}

// --- money: decimal strings end to end; arithmetic in integer cents (BigInt), never floats ---

export function toCents(text) {
  const match = /^\s*(-)?(\d+)(?:\.(\d{1,2}))?\s*$/.exec(String(text ?? ""));
  if (!match) return null;
  const cents = BigInt(match[2]) * 100n + BigInt((match[3] || "").padEnd(2, "0"));
  return match[1] ? -cents : cents;
}

export function fromCents(cents) {
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  return (negative ? "-" : "") + (abs / 100n).toString() + "." + (abs % 100n).toString().padStart(2, "0");
}

export function money(amount, currency) {
  if (amount === null || amount === undefined || amount === "") return "—";
  const value = typeof amount === "object" ? amount.amount : amount;
  const code = (typeof amount === "object" && amount.currency) || currency || state.config.currency;
  const format = new Intl.NumberFormat(state.config.locale, { style: "currency", currency: code, minimumFractionDigits: 2, maximumFractionDigits: 2 });
  return format.format(String(value)); // a string keeps the exact decimal
}

// --- dates: a calendar day (YYYY-MM-DD) as it is; an instant in the utility's time zone ---

export function day(isoDate) {
  if (!isoDate) return "—";
  const [y, m, d] = isoDate.slice(0, 10).split("-").map(Number);
  const format = new Intl.DateTimeFormat(state.config.locale, { dateStyle: state.config.date_style, timeZone: "UTC" });
  return format.format(new Date(Date.UTC(y, m - 1, d)));
}

export function instant(iso) {
  if (!iso) return "—";
  const format = new Intl.DateTimeFormat(state.config.locale, { dateStyle: state.config.date_style, timeStyle: "short", timeZone: state.config.time_zone });
  return format.format(new Date(iso));
}

export function today() {
  // en-CA writes dates as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", { timeZone: state.config.time_zone }).format(new Date());
}

export function thisMonth() {
  return today().slice(0, 7);
}

// --- DOM ---

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).flatMap(([label, value, id]) => [h("dt", {}, label), h("dd", id ? { id } : {}, value ?? "—")]));
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind ?? text ?? ""}` }, text ?? "—");
}

export function toast(message, bad = false) {
  const element = document.getElementById("toast");
  element.textContent = message;
  element.classList.toggle("bad", bad);
  element.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => element.classList.remove("show"), 5000);
}

export function view(title, ...children) {
  const container = document.getElementById("view");
  container.replaceChildren(h("h1", { id: "page-title", tabindex: "-1" }, title), ...children);
  document.title = `${title} · Paydesk`;
  return container;
}

export function focusTitle() {
  document.getElementById("page-title")?.focus();
}

export function failure(error) {
  const status = error instanceof ApiError ? error.status : 0;
  const text = status === 404 ? "Not found." : error.message || String(error);
  return h("p", { class: "error", role: "alert" }, text);
}

// A field's error next to the field, announced and linked with aria-describedby.
export function fieldError(input, message) {
  const id = input.id + "-error";
  let element = document.getElementById(id);
  if (!element) {
    element = h("p", { id, class: "field-error" });
    input.closest(".field, fieldset")?.append(element);
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    if (!described.includes(id)) input.setAttribute("aria-describedby", [...described, id].join(" "));
  }
  element.textContent = message || "";
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  return !message;
}

export function field(label, input, { required = false, hint = null } = {}) {
  const hintElement = hint ? h("p", { class: "hint", id: input.id + "-hint" }, hint) : null;
  if (hintElement) input.setAttribute("aria-describedby", hintElement.id);
  if (required) input.setAttribute("aria-required", "true");
  return h("div", { class: "field" }, h("label", { for: input.id, class: required ? "req" : "" }, label), input, hintElement);
}

export function select(id, options, { value = "", placeholder = null, multiple = false } = {}) {
  const element = h("select", { id, name: id, multiple });
  if (placeholder !== null) element.append(h("option", { value: "" }, placeholder));
  for (const option of options) {
    const [optionValue, text] = Array.isArray(option) ? option : [option, option];
    element.append(h("option", { value: optionValue, selected: optionValue === value }, text));
  }
  return element;
}

// A counter for a text area with a character limit (e.g. "12 / 500 characters"), announced politely.
export function counted(textarea, max) {
  textarea.setAttribute("maxlength", String(max));
  const counter = h("p", { class: "hint", id: textarea.id + "-counter", "aria-live": "polite" }, `0 / ${max} characters`);
  textarea.setAttribute("aria-describedby", counter.id);
  textarea.addEventListener("input", () => {
    counter.textContent = `${textarea.value.length} / ${max} characters`;
  });
  return counter;
}

// The three-dot menu: a button that opens a list of actions; arrow keys move, Escape closes (WAI-ARIA menu button).
export function actionsMenu(label, items) {
  const id = "menu-" + Math.random().toString(36).slice(2, 9);
  const button = h("button", { type: "button", class: "menu-button", "aria-haspopup": "true", "aria-expanded": "false", "aria-controls": id, "aria-label": label }, "⋯");
  const list = h("ul", { role: "menu", id, hidden: true, "aria-label": label });
  const wrap = h("div", { class: "menu-wrap" }, button, list);
  const entries = items.map(([text, action]) => {
    const item = h("button", { type: "button", role: "menuitem", tabindex: "-1" }, text);
    item.addEventListener("click", () => { close(); action(); });
    list.append(h("li", { role: "none" }, item));
    return item;
  });
  function open() {
    document.querySelectorAll('[role="menu"]:not([hidden])').forEach((m) => m.dispatchEvent(new Event("close")));
    list.hidden = false;
    button.setAttribute("aria-expanded", "true");
    entries[0]?.focus();
  }
  function close(returnFocus = false) {
    list.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (returnFocus) button.focus();
  }
  list.addEventListener("close", () => close());
  button.addEventListener("click", () => (list.hidden ? open() : close()));
  button.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") { event.preventDefault(); open(); }
  });
  list.addEventListener("keydown", (event) => {
    const index = entries.indexOf(document.activeElement);
    if (event.key === "ArrowDown") { event.preventDefault(); entries[(index + 1) % entries.length].focus(); }
    else if (event.key === "ArrowUp") { event.preventDefault(); entries[(index - 1 + entries.length) % entries.length].focus(); }
    else if (event.key === "Escape" || event.key === "Tab") { event.preventDefault(); close(true); }
  });
  document.addEventListener("click", (event) => { if (!wrap.contains(event.target)) close(); });
  return wrap;
}

// --- documents (receipts service): fetched with the token, shown from a blob: URL, never a token in a URL ---

export async function documentBlob(path, { download = false } = {}) {
  const response = await call("receipts", path + (download ? "?download=true" : ""), { raw: true });
  return response.blob();
}

export async function waitForDocument(path, { attempts = 40 } = {}) {
  // Documents are rendered when the event arrives: a just-recorded payment's receipt takes a moment.
  for (let attempt = 0; ; attempt++) {
    try {
      return await documentBlob(path);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404 || attempt >= attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.min(250 * (attempt + 1), 2000)));
    }
  }
}

export async function downloadDocument(path, filename) {
  const blob = await documentBlob(path, { download: true });
  const url = URL.createObjectURL(blob);
  const anchor = h("a", { href: url, download: filename, hidden: true });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export async function printDocument(path) {
  const blob = await documentBlob(path);
  const url = URL.createObjectURL(blob);
  const frame = h("iframe", { src: url, title: "Print preview", class: "print-frame", hidden: true });
  document.body.append(frame);
  frame.addEventListener("load", () => {
    try { frame.contentWindow.print(); } catch { window.open(url, "_blank", "noopener"); }
  });
  setTimeout(() => { frame.remove(); URL.revokeObjectURL(url); }, 120_000);
  return url;
}

export async function viewDocument(path, title) {
  const blob = await documentBlob(path);
  const url = URL.createObjectURL(blob);
  const dialog = h("dialog", { "aria-labelledby": "doc-title", class: "doc-dialog" });
  const close = h("button", { type: "button", onclick: () => dialog.close() }, "Close");
  dialog.append(h("div", { class: "dialog-body" }, h("h2", { id: "doc-title" }, title),
    h("iframe", { src: url, title, class: "receipt-frame", dataset: { blob: "pdf" } }), h("div", { class: "actions" }, close)));
  dialog.addEventListener("close", () => { dialog.remove(); URL.revokeObjectURL(url); });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}
