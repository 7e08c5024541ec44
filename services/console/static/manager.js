// The billing manager's pages (dashboard, reports, alerts, approvals) and the recovery executive's collections.
import { badge, call, day, field, fieldError, h, instant, money, query, select, state, thisMonth, toast, view } from "./core.js";

const POLL_MS = 5000;

function tile(id, title, value, sub, raw) {
  return h("article", { class: "tile", id }, h("h2", {}, title), h("p", { class: "value", dataset: { value: raw ?? "" } }, value), h("p", { class: "hint" }, sub));
}

function change(kpi) {
  if (!kpi.change_percent) return "no previous figure";
  const down = kpi.change_percent.startsWith("-");
  return `${down ? "▼" : "▲"} ${kpi.change_percent.replace("-", "")}% vs previous`;
}

export async function dashboardPage() {
  const period = h("input", { id: "period", type: "month", value: thisMonth() });
  const tiles = h("section", { class: "tiles", id: "tiles", "aria-live": "polite", "aria-label": "Header KPIs" });
  const minis = h("p", { class: "muted", id: "minis" });
  const error = h("p", { class: "error", role: "alert" });
  const opened = Date.now();
  const widgets = new Set(["tiles"]);
  view("Payment dashboard",
    h("div", { class: "filters" }, field("Month", period),
      h("p", {}, h("a", { href: state.config.services.kpi + "/", target: "_blank", rel: "noopener", id: "kpi-dashboard-link", onclick: () => widgets.add("live_dashboard") }, "Open the live collections dashboard (charts, drill-down)"))),
    error, tiles, minis,
    h("div", { class: "actions" }, h("a", { href: "#/payments" }, "All payments and credit notes"), h("a", { href: "#/reports" }, "Reports"), h("a", { href: "#/alerts" }, "Alerts")));

  async function load() {
    try {
      const s = await call("kpi", "/kpi/summary" + query({ period: period.value }));
      const k = s.kpis;
      tiles.replaceChildren(
        tile("tile-total-collected", "Total Collected", money(k.total_collected.value, s.currency), `${k.total_collected.payments} payments · ${change(k.total_collected)}`, k.total_collected.value),
        tile("tile-received-today", "Received Today", money(k.received_today.value, s.currency), `${k.received_today.payments} transactions · ${day(k.received_today.day)}`, k.received_today.value),
        tile("tile-collection-rate", "Collection Rate", k.collection_rate.value === null ? "—" : `${k.collection_rate.value}%`, `of ${money(k.collection_rate.total_due, s.currency)} due · ${change(k.collection_rate)}`, k.collection_rate.value),
        tile("tile-average-collection-time", "Avg Collection Time", k.average_collection_time.value === null ? "—" : `${k.average_collection_time.value} days`, `bill to payment · ${change(k.average_collection_time)}`, k.average_collection_time.value));
      minis.textContent = `${k.pending_verification.count} pending verification · ${k.credit_notes_issued.count} credit notes issued · ${k.failed_online_payments.count} failed online · as of ${instant(s.as_of)}`;
      minis.dataset.pending = String(k.pending_verification.count);
      minis.dataset.creditNotes = String(k.credit_notes_issued.count);
      tiles.dataset.loaded = s.as_of;
      error.textContent = "";
    } catch (failure) { error.textContent = failure.message; }
  }
  period.addEventListener("change", () => { widgets.add("period"); load(); });
  await load();
  const timer = setInterval(() => { if (!document.getElementById("tiles")) left(); else load(); }, POLL_MS);
  // dashboard_view once the page is left (another page, another tab, closed): how long it was open and which
  // widgets were used. keepalive lets the request outlive a closing tab.
  let reported = false;
  function left() {
    if (reported) return;
    reported = true;
    clearInterval(timer);
    window.removeEventListener("hashchange", left);
    window.removeEventListener("pagehide", left);
    const body = { date_range_selected: period.value, widgets_accessed: [...widgets], view_duration_seconds: Math.round((Date.now() - opened) / 1000) };
    call("kpi", "/kpi/dashboard-views", { method: "POST", body, keepalive: true }).catch(() => {});
  }
  window.addEventListener("hashchange", left);
  window.addEventListener("pagehide", left);
}

export async function reportsPage() {
  const from = h("input", { id: "r-from", type: "date" });
  const to = h("input", { id: "r-to", type: "date" });
  const format = select("r-format", [["csv", "CSV"], ["xlsx", "Excel (XLSX)"]], { value: "csv" });
  const status = h("p", { class: "hint", "aria-live": "polite", id: "r-status" });
  async function exportFrom(service, path, params, name) {
    if (from.value && to.value && from.value > to.value) { fieldError(to, "“To” must not be before “From”."); return; }
    fieldError(to, "");
    status.textContent = "Preparing the file…";
    try {
      const response = await call(service, path + query({ ...params, format: format.value }), { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const anchor = h("a", { href: url, download: `${name}.${format.value}`, hidden: true });
      document.body.append(anchor); anchor.click(); anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      status.textContent = `${name}.${format.value} downloaded.`;
    } catch (error) { status.textContent = error.message; }
  }
  view("Reports",
    h("section", { class: "card", "aria-labelledby": "r-title" }, h("h2", { id: "r-title" }, "Export data"),
      h("div", { class: "filters" }, field("From", from), field("To", to), field("Format", format)),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "export-payments", onclick: () => exportFrom("payments", "/payments/export", { date_from: from.value, date_to: to.value }, "payments") }, "Export payments"),
        h("button", { type: "button", id: "export-credit-notes", onclick: () => exportFrom("credit_notes", "/credit-notes/export", { created: from.value || to.value ? "custom" : "", created_from: from.value, created_to: to.value }, "credit-notes") }, "Export credit notes")),
      status),
    h("p", {}, h("a", { href: state.config.services.kpi + "/", target: "_blank", rel: "noopener" }, "Trends and drill-down: the collections dashboard")));
}

const METRICS = [["collection_rate", "Collection rate (%)"], ["failed_online_payments_per_hour", "Failed online payments per hour"], ["pending_verifications", "Payments pending verification"]];

export async function alertsPage() {
  const list = h("tbody");
  const raised = h("ul", { id: "raised" });
  const metric = select("a-metric", METRICS);
  const comparison = select("a-comparison", [["below", "falls below"], ["above", "rises above"]]);
  const threshold = h("input", { id: "a-threshold", inputmode: "decimal" });
  const error = h("p", { class: "error", role: "alert" });
  async function load() {
    const answer = await call("kpi", "/kpi/alerts");
    list.replaceChildren(...answer.alerts.map((a) => h("tr", {}, h("td", {}, METRICS.find(([m]) => m === a.metric)?.[1] ?? a.metric), h("td", {}, a.comparison), h("td", { class: "num" }, a.threshold), h("td", {}, a.created_by), h("td", {}, instant(a.created_at)))));
    if (!answer.alerts.length) list.append(h("tr", {}, h("td", { colspan: "5", class: "empty" }, "No alerts set.")));
    list.dataset.loaded = String(answer.alerts.length);
    raised.replaceChildren(...answer.recently_raised.map((r) => h("li", {}, `${r.breached ? "Breached" : "Back to normal"}: ${r.value ?? "—"} (${r.raised_count}×, last ${instant(r.last_raised_at)})`)));
  }
  const form = h("form", { id: "alert-form", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    if (!fieldError(threshold, /^\d+(\.\d{1,2})?$/.test(threshold.value.trim()) ? "" : "A number, e.g. 90")) return threshold.focus();
    try {
      await call("kpi", "/kpi/alerts", { method: "POST", body: { metric: metric.value, comparison: comparison.value, threshold: threshold.value.trim() } });
      toast("Alert saved."); threshold.value = ""; await load();
    } catch (failure) { error.textContent = failure.message; }
  } }, h("div", { class: "filters" }, field("Metric", metric), field("When it", comparison), field("Threshold", threshold, { required: true })), error,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add alert")));
  view("Alerts",
    h("section", { class: "card", "aria-labelledby": "al-new" }, h("h2", { id: "al-new" }, "New alert"), form),
    h("section", { class: "card", "aria-labelledby": "al-list" }, h("h2", { id: "al-list" }, "Alerts"),
      h("div", { class: "table-wrap" }, h("table", { id: "alerts-table" }, h("thead", {}, h("tr", {}, ["Metric", "When", "Threshold", "Set by", "Set on"].map((t) => h("th", { scope: "col" }, t)))), list))),
    h("section", { class: "card", "aria-labelledby": "al-raised" }, h("h2", { id: "al-raised" }, "Recently raised"), raised));
  await load();
}

// Where approvals wait: each service keeps its own maker-checker list; the page shows them as one.
const APPROVAL_SOURCES = [["payments", "Payment adjustment"], ["credit_notes", "Credit note"]];

export async function approvalsPage() {
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert", id: "approvals-error" });
  const table = h("table", { id: "approvals-table", class: "stack" },
    h("thead", {}, h("tr", {}, ["Request", "Subject", "Account", "Amount", "Reason", "Requested by", "Requested", "Decision"].map((t) => h("th", { scope: "col" }, t)))), body);
  view("Approvals", error, h("div", { class: "table-wrap" }, table),
    h("p", { class: "hint" }, "Online payments awaiting verification are verified from their details page (Verify)."));

  async function load() {
    const answers = await Promise.allSettled(APPROVAL_SOURCES.map(([service]) => call(service, "/approvals")));
    const rows = [];
    const failed = [];
    answers.forEach((answer, i) => {
      const [service, label] = APPROVAL_SOURCES[i];
      if (answer.status === "fulfilled") rows.push(...answer.value.approvals.map((a) => ({ ...a, service, label })));
      else failed.push(`${label}s could not be listed: ${answer.reason.message}`);
    });
    rows.sort((a, b) => a.requested_at.localeCompare(b.requested_at));
    error.textContent = failed.join(" ");
    body.replaceChildren(...rows.map(approvalRow));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: "8", class: "empty" }, "Nothing waits for your approval.")));
    table.dataset.loaded = String(rows.length);
  }

  function approvalRow(a) {
    const subject = a.service === "credit_notes" ? h("a", { href: `#/credit-notes/${encodeURIComponent(a.subject)}` }, a.subject)
      : h("a", { href: `#/payments/${encodeURIComponent(a.subject)}` }, a.subject);
    return h("tr", { dataset: { approval: a.approval_id, service: a.service, subject: a.subject } },
      h("td", { "data-label": "Request" }, a.label), h("td", { "data-label": "Subject" }, subject),
      h("td", { "data-label": "Account" }, a.account_number ?? "—"), h("td", { "data-label": "Amount", class: "num" }, a.amount ? money(a.amount, a.currency) : "—"),
      h("td", { "data-label": "Reason" }, a.reason ?? "—"), h("td", { "data-label": "Requested by" }, a.requested_by), h("td", { "data-label": "Requested" }, instant(a.requested_at)),
      h("td", { "data-label": "Decision" }, h("div", { class: "actions" },
        h("button", { type: "button", class: "primary approve", "aria-label": `Approve ${a.subject}`, onclick: () => decide(a, "approve") }, "Approve"),
        h("button", { type: "button", class: "reject", "aria-label": `Reject ${a.subject}`, onclick: () => decide(a, "reject") }, "Reject"))));
  }

  async function decide(approval, decision) {
    try {
      await call(approval.service, `/approvals/${encodeURIComponent(approval.approval_id)}/${decision}`, { method: "POST", body: {} });
      toast(`${approval.label} ${approval.subject} ${decision === "approve" ? "approved" : "rejected"}.`);
      await load();
    } catch (failure) { toast(failure.message, true); }
  }
  await load();
}

export async function collectionsPage() {
  if (!state.config.services.collections) {
    view("Collections", h("p", { class: "notice", id: "collections-missing" },
      "The collections service (delinquent accounts, payment arrangements, compliance) is not deployed here yet. ",
      "Payments against installments are recorded from Record payment."),
      h("p", {}, h("a", { href: "#/record-payment" }, "Record a payment")));
    return;
  }
  const body = h("tbody");
  view("Collections", h("div", { class: "table-wrap" }, h("table", { id: "collections-table", class: "stack" },
    h("thead", {}, h("tr", {}, ["Account", "Consumer", "Overdue", "Days", "Arrangement"].map((t) => h("th", { scope: "col" }, t)))), body)));
  const answer = await call("collections", "/collections/accounts");
  const rows = answer.items ?? answer.accounts ?? [];
  body.replaceChildren(...rows.map((a) => h("tr", {}, h("td", {}, a.account_number), h("td", {}, a.name ?? a.consumer_name ?? ""),
    h("td", { class: "num" }, money(a.overdue ?? a.overdue_amount)), h("td", {}, a.days_overdue ?? ""), h("td", {}, a.arrangement_id ? badge(a.arrangement_status ?? "Active") : "—"))));
}
