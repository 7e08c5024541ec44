// The collections dashboard: KPI tiles, a trend chart, breakdowns, recent payments and alerts, polled live.
// The page is public; its data calls carry a bearer token kept in sessionStorage for this tab only.
"use strict";

const TOKEN_KEY = "paydesk.kpi.token";
const REFRESH_MS = Number(document.body.dataset.refreshMs) || 5000;
const SYMBOLS = { USD: "$", EUR: "€", GBP: "£", INR: "₹", CAD: "CA$", AUD: "A$", JPY: "¥" };
const PALETTE = ["#38bdf8", "#a78bfa", "#f59e0b", "#22c55e", "#f472b6", "#fb7185", "#2dd4bf", "#facc15"];
const charts = {};
let period = null;
let drillChannel = null;
let timer = null;

// Amounts stay decimal strings end to end; only the charts turn them into numbers to draw.
function groupThousands(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}
function formatMoney(amount, currency) {
  if (amount === null || amount === undefined) return "—";
  const negative = amount.startsWith("-");
  const [whole, fraction] = (negative ? amount.slice(1) : amount).split(".");
  const symbol = SYMBOLS[currency] ?? currency + " ";
  return (negative ? "-" : "") + symbol + groupThousands(whole) + (fraction !== undefined ? "." + fraction : "");
}
function formatPercent(value) {
  return value === null || value === undefined ? "—" : value + "%";
}
function formatDays(value) {
  return value === null || value === undefined ? "—" : value + " days";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401 || response.status === 403) {
    const problem = await response.json().catch(() => ({}));
    throw Object.assign(new Error(problem.detail || "not allowed"), { auth: true });
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setChange(element, kpi, against) {
  const change = kpi.change_percent;
  if (change === null || change === undefined) {
    element.dataset.direction = "flat";
    element.textContent = kpi.previous === null ? "no previous figure" : "no change to compare";
    return;
  }
  const direction = change.startsWith("-") ? "down" : change === "0.00" ? "flat" : "up";
  element.dataset.direction = direction;
  const arrow = direction === "down" ? "▼" : direction === "up" ? "▲" : "■";
  element.dataset.change = change;
  element.textContent = `${arrow} ${change.replace("-", "")}% vs ${against}`;
}

function setTile(id, raw, text, kpi, against = "last month") {
  const tile = document.getElementById(id);
  const value = tile.querySelector("[data-value]");
  value.dataset.value = raw ?? "";
  value.textContent = text;
  setChange(tile.querySelector(".change"), kpi, against);
  return tile;
}

function renderSummary(summary) {
  const k = summary.kpis;
  const cur = summary.currency;
  setTile("tile-total-collected", k.total_collected.value, formatMoney(k.total_collected.value, cur), k.total_collected)
    .querySelector(".count").textContent = k.total_collected.payments;
  const today = setTile(
    "tile-received-today", k.received_today.value, formatMoney(k.received_today.value, cur), k.received_today, "yesterday",
  );
  today.querySelector(".count").textContent = k.received_today.payments;
  today.querySelector(".day").textContent = k.received_today.day;
  setTile("tile-collection-rate", k.collection_rate.value, formatPercent(k.collection_rate.value), k.collection_rate)
    .querySelector(".due").textContent = formatMoney(k.collection_rate.total_due, cur);
  setTile(
    "tile-average-collection-time",
    k.average_collection_time.value,
    formatDays(k.average_collection_time.value),
    k.average_collection_time,
  );
  const plans = setTile(
    "tile-payment-plan-compliance",
    k.payment_plan_compliance.value,
    formatPercent(k.payment_plan_compliance.value),
    k.payment_plan_compliance,
  );
  plans.querySelector(".kept").textContent = k.payment_plan_compliance.kept;
  plans.querySelector(".missed").textContent = k.payment_plan_compliance.missed;
  setTile(
    "tile-recovered-this-month",
    k.recovered_this_month.value,
    formatMoney(k.recovered_this_month.value, cur),
    k.recovered_this_month,
  ).querySelector(".count").textContent = k.recovered_this_month.payments;
  for (const name of ["pending_verification", "failed_online_payments", "cancelled_payments", "refunded_payments",
    "credit_notes_issued", "credit_notes_applied"]) {
    const el = document.querySelector(`#mini-${name.replaceAll("_", "-")} [data-value]`);
    el.dataset.value = String(k[name].count);
    el.textContent = k[name].count;
  }
}

function chart(id, config) {
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].update("none");
    return charts[id];
  }
  config.options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    plugins: { legend: { labels: { color: "#cbd5e1" } } },
    ...config.options,
  };
  charts[id] = new Chart(document.getElementById(id), config);
  return charts[id];
}

function monthDays(p) {
  const [y, m] = p.split("-").map(Number);
  const days = [];
  const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
  for (let d = 1; d <= last; d++) days.push(`${p}-${String(d).padStart(2, "0")}`);
  return days;
}

function renderTrend(trend) {
  const days = monthDays(period);
  const channels = [...new Set(trend.points.map((p) => p.channel))].sort();
  const datasets = channels.map((channel, i) => {
    const byDay = Object.fromEntries(trend.points.filter((p) => p.channel === channel).map((p) => [p.bucket, Number(p.amount)]));
    return { label: channel, data: days.map((d) => byDay[d] ?? 0), backgroundColor: PALETTE[i % PALETTE.length], stack: "c" };
  });
  chart("trend-chart", {
    type: "bar",
    data: { labels: days.map((d) => d.slice(8)), datasets },
    options: {
      scales: {
        x: { stacked: true, ticks: { color: "#94a3b8" }, grid: { color: "#334155" } },
        y: { stacked: true, ticks: { color: "#94a3b8" }, grid: { color: "#334155" } },
      },
    },
  });
}

function renderBreakdown(id, points, key) {
  const labels = points.map((p) => p[key]);
  const amounts = points.map((p) => Number(p.amount));
  const isDoughnut = id === "channel-chart";
  const c = chart(id, {
    type: isDoughnut ? "doughnut" : "bar",
    data: { labels, datasets: [{ label: "Collected", data: amounts, backgroundColor: labels.map((_, i) => PALETTE[i % PALETTE.length]) }] },
    options: isDoughnut
      ? { plugins: { legend: { position: "right", labels: { color: "#cbd5e1" } } } }
      : {
        indexAxis: "y",
        plugins: { legend: { display: false } },
        scales: { x: { ticks: { color: "#94a3b8" }, grid: { color: "#334155" } }, y: { ticks: { color: "#cbd5e1" } } },
      },
  });
  // Drill-down: a channel's slice opens what that channel's money is made of, by payment method.
  if (isDoughnut) c.options.onClick = (_, elements) => elements.length && drillInto(c.data.labels[elements[0].index]);
}

async function drillInto(channel) {
  drillChannel = drillChannel === channel ? null : channel;
  if (drillChannel === null) return refresh();
  const detail = await api(`/kpi/drilldown?period=${period}&channel=${encodeURIComponent(channel)}&by=method`);
  document.getElementById("method-caption").textContent = `${channel}: by payment method`;
  renderBreakdown("method-chart", detail.rows, "method");
}

function renderRecent(payments) {
  const body = document.querySelector("#recent tbody");
  body.replaceChildren(...payments.map((p) => {
    const row = document.createElement("tr");
    const cells = [p.receipt_number, `${p.consumer_name} (${p.account_number})`, formatMoney(p.amount, p.currency),
      p.method, p.channel, p.status, p.posted_at.slice(0, 16).replace("T", " ")];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 2) td.className = "num";
      row.appendChild(td);
    });
    return row;
  }));
}

function renderAlerts(alerts) {
  const list = document.getElementById("alerts");
  const byId = Object.fromEntries(alerts.alerts.map((a) => [a.alert_id, a]));
  const items = alerts.recently_raised.map((r) => {
    const rule = byId[r.alert_id] || {};
    const li = document.createElement("li");
    li.className = r.breached ? "breached" : "";
    li.textContent = `${rule.metric} ${rule.comparison} ${rule.threshold}: ${r.value} (${r.window})`;
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.textContent = `${alerts.alerts.length} thresholds set, none crossed`;
    items.push(li);
  }
  list.replaceChildren(...items);
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const summary = await api(`/kpi/summary${period ? "?period=" + period : ""}`);
    if (!period) {
      period = summary.period;
      document.getElementById("period").value = period;
    }
    const [y, m] = period.split("-").map(Number);
    const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
    const range = `from=${period}-01&to=${period}-${String(last).padStart(2, "0")}`;
    const [trend, channels, methods, recent, alerts] = await Promise.all([
      api(`/kpi/trends?${range}&granularity=day&by=channel`),
      api(`/kpi/trends?${range}&granularity=month&by=channel`),
      api(`/kpi/trends?${range}&granularity=month&by=method`),
      api("/kpi/recent-payments?limit=8"),
      api("/kpi/alerts"),
    ]);
    renderSummary(summary);
    renderTrend(trend);
    renderBreakdown("channel-chart", channels.points, "channel");
    if (drillChannel === null) {
      document.getElementById("method-caption").textContent = "By payment method";
      renderBreakdown("method-chart", methods.points, "method");
    }
    renderRecent(recent.payments);
    renderAlerts(alerts);
    document.getElementById("board").dataset.loadedPeriod = period;
    status.dataset.state = "live";
    status.textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.dataset.state = "error";
    status.textContent = error.message;
    if (error.auth) showLogin(error.message);
  }
}

function showLogin(message) {
  clearInterval(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("board").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("board").hidden = false;
  api("/kpi/dashboard-views", {
    method: "POST",
    body: JSON.stringify({
      date_range_selected: period || "current-month",
      widgets_accessed: ["total_collected", "received_today", "collection_rate", "average_collection_time",
        "trend", "by_channel", "by_method", "recent_payments", "alerts"],
    }),
  }).catch(() => {});
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  // A token given in the address (?token=) moves to this tab's storage and out of the address bar.
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  period = url.searchParams.get("period");
  if (period) document.getElementById("period").value = period;
  document.getElementById("period").addEventListener("change", (event) => {
    period = event.target.value || null;
    drillChannel = null;
    refresh();
  });
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    start();
  });
  if (token()) start();
  else showLogin("");
});
