// All Payments / Credit Notes tabs (server-side search, filters and keyset paging), the payment details view
// with its Verify button, the Create Credit Note dialog, and the credit note details view.
import {
  actionsMenu, badge, call, counted, day, downloadDocument, facts, field, fieldError, fromCents, h, hasRole, track,
  idempotencyKey, instant, money, printDocument, query, select, state, toCents, toast, view, viewDocument,
} from "./core.js";

const PAYMENT_STATUSES = ["Posted", "Pending", "Failed", "Cancelled", "Refunded", "Disputed"];
const TYPES = [["bill", "Bill"], ["service", "Service"], ["installment", "Installment"]];
const REMARKS_MAX = 500;

function receiptPath(number) { return `/receipts/${encodeURIComponent(number)}.pdf`; }
function creditNotePath(number) { return `/credit-notes/${encodeURIComponent(number)}.pdf`; }

// --- the list pages ---

export async function paymentsPage(_context, tab) {
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Payments and credit notes" },
    h("button", { type: "button", role: "tab", id: "tab-payments", "aria-controls": "panel", "aria-selected": String(tab === "payments"), tabindex: tab === "payments" ? "0" : "-1" }, "All Payments"),
    h("button", { type: "button", role: "tab", id: "tab-credit-notes", "aria-controls": "panel", "aria-selected": String(tab === "credit-notes"), tabindex: tab === "credit-notes" ? "0" : "-1" }, "Credit Notes"));
  const panel = h("div", { id: "panel", role: "tabpanel", "aria-labelledby": tab === "payments" ? "tab-payments" : "tab-credit-notes" });
  const actions = hasRole("customer_executive", "recovery_executive")
    ? h("div", { class: "actions" }, h("a", { href: "#/record-payment", class: "button-link", id: "record-payment-link" }, "Record payment")) : null;
  view("Payments", actions, tabs, panel);
  tabs.addEventListener("click", (event) => {
    const target = event.target.closest('[role="tab"]');
    if (target) location.hash = target.id === "tab-payments" ? "#/payments" : "#/credit-notes";
  });
  tabs.addEventListener("keydown", (event) => {
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      location.hash = tab === "payments" ? "#/credit-notes" : "#/payments";
    }
  });
  if (tab === "payments") await paymentsTab(panel);
  else await creditNotesTab(panel);
}

function pager(prefix, onPage) {
  const cursors = [null];
  let index = 0;
  const previous = h("button", { type: "button", id: `${prefix}-prev`, disabled: true }, "Previous");
  const next = h("button", { type: "button", id: `${prefix}-next`, disabled: true }, "Next");
  const where = h("span", { class: "muted", "aria-live": "polite" });
  previous.addEventListener("click", () => { index -= 1; onPage(cursors[index]); });
  next.addEventListener("click", () => { index += 1; onPage(cursors[index]); });
  return {
    element: h("div", { class: "pager" }, where, previous, next),
    reset() { cursors.length = 1; index = 0; },
    loaded(nextCursor, count) {
      cursors[index + 1] = nextCursor;
      previous.disabled = index === 0;
      next.disabled = !nextCursor;
      where.textContent = count ? `Page ${index + 1} · ${count} shown` : "";
    },
  };
}

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

async function paymentsTab(panel) {
  const methods = await call("payments", "/settings/payment-methods").catch(() => ({ payment_methods: [] }));
  const q = h("input", { id: "payments-q", type: "search", placeholder: "Consumer name, receipt # or consumer ID" });
  const from = h("input", { id: "f-date-from", type: "date" });
  const to = h("input", { id: "f-date-to", type: "date" });
  const method = select("f-method", methods.payment_methods, { placeholder: "All methods" });
  const status = select("f-status", PAYMENT_STATUSES, { placeholder: "All statuses" });
  const type = select("f-type", TYPES, { placeholder: "All types" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Search payments" },
    h("div", { class: "wide" }, field("Search payments", q)), field("From", from), field("To", to),
    field("Method", method), field("Status", status), field("Type", type));
  const body = h("tbody");
  const table = h("table", { id: "payments-table", class: "stack" },
    h("caption", { class: "muted" }, "Payments, newest first"),
    h("thead", {}, h("tr", {}, ["Receipt #", "Consumer", "Amount", "Method", "Date", "Type", "Status", "Actions"].map((t) => h("th", { scope: "col", class: t === "Amount" ? "num" : "" }, t)))), body);
  const error = h("p", { class: "error", role: "alert" });
  const pages = pager("payments", load);
  panel.replaceChildren(filters, error, h("div", { class: "table-wrap" }, table), pages.element);

  async function load(cursor = null) {
    error.textContent = "";
    if (from.value && to.value && from.value > to.value) { fieldError(to, "“To” must not be before “From”."); return; }
    fieldError(to, "");
    const params = { q: q.value.trim(), date_from: from.value, date_to: to.value, method: method.value, status: status.value, type: type.value, limit: state.config.page_size, cursor };
    lastSearch = {
      search_criteria: ["q", "method", "status", "type"].filter((k) => params[k]).map((k) => `${k}=${params[k]}`).join("&").slice(0, 100),
      date_range: from.value || to.value ? `${from.value}..${to.value}` : "",
    };
    try {
      const answer = await call("payments", "/payments" + query(params));
      body.replaceChildren(...answer.payments.map(paymentRow));
      if (!answer.payments.length) body.append(h("tr", {}, h("td", { colspan: "8", class: "empty" }, "No payments match.")));
      pages.loaded(answer.next_cursor, answer.payments.length);
      table.dataset.loaded = String(Date.now());
    } catch (failure) { error.textContent = failure.message; }
  }
  let timer = null;
  filters.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { pages.reset(); load(); }, 300); });
  filters.addEventListener("submit", (event) => { event.preventDefault(); pages.reset(); load(); });
  await load();
}

// The seed's payment_history_viewed: what the list was searched for, over which dates, and what was opened from it.
let lastSearch = { search_criteria: "", date_range: "" };

function viewed(p, action) {
  track("payment_history_viewed", { ...lastSearch, details_accessed: p.receipt_number, follow_up_action: action });
}

function paymentRow(p) {
  const details = `#/payments/${encodeURIComponent(p.receipt_number)}`;
  const menu = actionsMenu(`More actions for ${p.receipt_number}`, [
    ["View details", () => { viewed(p, "view_details"); location.hash = details; }],
    ["View receipt", () => { viewed(p, "view_receipt"); viewDocument(receiptPath(p.receipt_number), `Receipt ${p.receipt_number}`); }],
    ...(hasRole("customer_executive", "recovery_executive", "billing_manager") ? [["Create credit note", () => { viewed(p, "create_credit_note"); creditNoteDialog(p.receipt_number); }]] : []),
  ]);
  return h("tr", { dataset: { receipt: p.receipt_number } },
    cell("Receipt #", h("a", { href: details, onclick: () => viewed(p, "view_details") }, p.receipt_number)),
    cell("Consumer", h("span", {}, p.consumer.name, h("br"), h("small", { class: "muted" }, p.consumer.account_number))),
    cell("Amount", h("span", { class: "num" }, money(p.amount))), cell("Method", p.method), cell("Date", day(p.date)),
    cell("Type", p.type), cell("Status", badge(p.status)), cell("Actions", menu));
}

async function creditNotesTab(panel) {
  const policy = await call("credit_notes", "/settings/credit-notes").catch(() => ({ reasons: [] }));
  const q = h("input", { id: "cn-q", type: "search", placeholder: "Credit note #, consumer, account or receipt" });
  const status = select("cn-status", ["All", "Active", "Applied", "Expired"], { value: "All" });
  const created = select("cn-created", [["today", "Today"], ["this_week", "This week"], ["this_month", "This month"], ["custom", "Custom range"]], { placeholder: "Any date" });
  const from = h("input", { id: "cn-from", type: "date" });
  const to = h("input", { id: "cn-to", type: "date" });
  const reason = select("cn-reason", policy.reasons, { multiple: true });
  reason.size = 3;
  const consumer = h("input", { id: "cn-consumer", type: "search", placeholder: "Name or account" });
  const remaining = select("cn-remaining", [["fully_used", "Fully used"], ["partial", "Partial remaining"], ["full", "Full remaining"]], { placeholder: "Any" });
  const receipt = h("input", { id: "cn-receipt", type: "search", placeholder: "e.g. R-5001" });
  const min = h("input", { id: "cn-min", inputmode: "decimal", placeholder: "Min" });
  const max = h("input", { id: "cn-max", inputmode: "decimal", placeholder: "Max" });
  const fromField = field("From", from);
  const toField = field("To", to);
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Search credit notes" },
    h("div", { class: "wide" }, field("Search credit notes", q)), field("Status", status), field("Created", created), fromField, toField,
    field("Reason", reason, { hint: "Ctrl/⌘-click for several" }), field("Consumer", consumer), field("Remaining", remaining),
    field("Linked payment", receipt), field("Credit amount from", min), field("Credit amount to", max));
  const body = h("tbody");
  const table = h("table", { id: "credit-notes-table", class: "stack" },
    h("caption", { class: "muted" }, "Credit notes, newest first"),
    h("thead", {}, h("tr", {}, ["Credit Note #", "Consumer", "Amount", "Remaining", "Reason", "Status", "Created Date", "Linked Payment", "Actions"].map((t) => h("th", { scope: "col" }, t)))), body);
  const error = h("p", { class: "error", role: "alert" });
  const pages = pager("credit-notes", load);
  panel.replaceChildren(filters, error, h("div", { class: "table-wrap" }, table), pages.element);
  const custom = () => { const on = created.value === "custom"; fromField.hidden = toField.hidden = !on; };
  custom();

  async function load(cursor = null) {
    error.textContent = "";
    const bad = [
      fieldError(to, created.value === "custom" && from.value && to.value && from.value > to.value ? "“To” must not be before “From”." : ""),
      fieldError(from, created.value === "custom" && !from.value && !to.value ? "Enter a From or To date." : ""),
      fieldError(min, min.value && toCents(min.value) === null ? "Numbers only, e.g. 10.00" : ""),
      fieldError(max, max.value && toCents(max.value) === null ? "Numbers only, e.g. 10.00" : (min.value && max.value && toCents(min.value) > toCents(max.value) ? "Must not be below the minimum." : "")),
    ];
    if (!bad.every(Boolean)) return;
    const params = {
      q: q.value.trim(), status: status.value, created: created.value,
      created_from: created.value === "custom" ? from.value : "", created_to: created.value === "custom" ? to.value : "",
      reason: [...reason.selectedOptions].map((o) => o.value), consumer: consumer.value.trim(), remaining: remaining.value,
      receipt_number: receipt.value.trim(), amount_min: min.value, amount_max: max.value, limit: state.config.page_size, cursor,
    };
    try {
      const answer = await call("credit_notes", "/credit-notes" + query(params));
      body.replaceChildren(...answer.items.map(creditNoteRow));
      if (!answer.items.length) body.append(h("tr", {}, h("td", { colspan: "9", class: "empty" }, "No credit notes match.")));
      pages.loaded(answer.next_cursor, answer.items.length);
      table.dataset.loaded = String(Date.now());
    } catch (failure) { error.textContent = failure.message; }
  }
  let timer = null;
  filters.addEventListener("input", () => { custom(); clearTimeout(timer); timer = setTimeout(() => { pages.reset(); load(); }, 300); });
  filters.addEventListener("change", custom);
  filters.addEventListener("submit", (event) => { event.preventDefault(); pages.reset(); load(); });
  await load();
}

function creditNoteRow(n) {
  const details = `#/credit-notes/${encodeURIComponent(n.credit_note_number)}`;
  const menu = actionsMenu(`More actions for ${n.credit_note_number}`, creditNoteActions(n.credit_note_number, details));
  return h("tr", { dataset: { creditNote: n.credit_note_number } },
    cell("Credit Note #", h("a", { href: details }, n.credit_note_number)),
    cell("Consumer", h("span", {}, n.consumer.name, h("br"), h("small", { class: "muted" }, n.consumer.account_number))),
    cell("Amount", h("span", { class: "num" }, money(n.amount, n.currency))), cell("Remaining", h("span", { class: "num" }, money(n.remaining, n.currency))),
    cell("Reason", badge(n.reason, "reason")), cell("Status", badge(n.status)), cell("Created Date", day(n.created_date)),
    cell("Linked Payment", h("a", { href: `#/payments/${encodeURIComponent(n.linked_payment)}` }, n.linked_payment)), cell("Actions", menu));
}

function creditNoteActions(number, details) {
  return [
    ["View details", () => { location.hash = details; }],
    ["Print credit note", () => printDocument(creditNotePath(number))],
    ["View credit note", () => viewDocument(creditNotePath(number), `Credit note ${number}`)],
    ["Download", () => downloadDocument(creditNotePath(number), `${number}.pdf`)],
  ];
}

// --- payment details ---

export async function paymentDetailsPage({ params }) {
  const id = params[0];
  let p;
  try {
    p = await call("payments", `/payments/${encodeURIComponent(id)}`);
  } catch (error) {
    view(`Payment ${id}`, h("p", { class: "error", role: "alert" }, error.status === 404 ? "No such payment." : error.message));
    return;
  }
  const info = p.payment_information;
  const d = p.payment_details;
  const a = p.amount_analysis;
  const verify = p.processing.can_verify && hasRole("billing_manager")
    ? h("button", { type: "button", id: "verify", class: "primary", onclick: async (event) => {
      event.currentTarget.disabled = true;
      try { await call("payments", `/payments/${encodeURIComponent(p.payment_id)}/verify`, { method: "POST" }); toast("Payment verified."); await paymentDetailsPage({ params }); }
      catch (error) { toast(error.message, true); event.currentTarget.disabled = false; }
    } }, "Verify") : null;
  const itemFacts = d.payment_type === "bill" ? [["Invoice ID", d.invoice_id], ["Service period", d.service_period]]
    : d.payment_type === "service" ? [["Service name", d.service_name], ["Service date", d.service_date]]
    : [["Plan ID", d.plan_id], ["Installment #", d.installment_number], ["Due date", day(d.due_date)]];
  view(`Payment ${p.payment_id}`,
    h("div", { class: "actions" },
      h("button", { type: "button", id: "view-receipt", onclick: () => viewDocument(receiptPath(p.receipt_number), `Receipt ${p.receipt_number}`) }, "View receipt"),
      h("button", { type: "button", id: "download-receipt", onclick: () => downloadDocument(receiptPath(p.receipt_number), `${p.receipt_number}.pdf`) }, "Download receipt"),
      hasRole("customer_executive", "recovery_executive", "billing_manager") ? h("button", { type: "button", id: "create-credit-note", onclick: () => creditNoteDialog(p.receipt_number) }, "Create credit note") : null),
    h("div", { class: "grid", id: "payment-details" },
      h("section", { class: "card", "aria-labelledby": "s-info" }, h("h2", { id: "s-info" }, "Payment information"), facts([
        ["Payment ID", info.payment_id], ["Status", badge(info.status), "detail-status"], ["Amount paid", money(info.amount_paid)],
        ["Payment method", info.payment_method], ["Payment type", info.payment_type], ["Channel", info.channel],
        info.webhook_status ? ["Webhook status", info.webhook_status] : null, info.settlement_status ? ["Settlement status", info.settlement_status] : null])),
      h("section", { class: "card", "aria-labelledby": "s-item" }, h("h2", { id: "s-item" }, "Payment details"), facts(itemFacts)),
      h("section", { class: "card", "aria-labelledby": "s-analysis" }, h("h2", { id: "s-analysis" }, "Payment amount analysis"), facts([
        [a.due_label, money(a.due)], ["Amount paid", money(a.paid)], ["Difference", h("span", {}, money(a.difference), " ", badge(a.outcome, p.analysis.outcome)), "detail-outcome"]])),
      p.credit_note ? h("section", { class: "card", "aria-labelledby": "s-cn" }, h("h2", { id: "s-cn" }, "Credit note generated"), facts([
        ["Credit note number", h("a", { href: `#/credit-notes/${encodeURIComponent(p.credit_note.credit_note_number)}` }, p.credit_note.credit_note_number)],
        ["Credit amount", money(p.credit_note.amount)]])) : null,
      p.cash ? h("section", { class: "card", "aria-labelledby": "s-cash" }, h("h2", { id: "s-cash" }, "Cash payment details"), facts([
        ["Amount received", money(p.cash.amount_received)], ["Change given", money(p.cash.change_given)]])) : null,
      h("section", { class: "card", "aria-labelledby": "s-txn" }, h("h2", { id: "s-txn" }, "Transaction information"), facts([
        ["Transaction ID", p.transaction.transaction_id], ["Receipt number", p.transaction.receipt_number], ["Payment date", day(p.transaction.payment_date)]])),
      h("section", { class: "card", "aria-labelledby": "s-proc" }, h("h2", { id: "s-proc" }, "Processing information"), facts([
        ["Received by", p.processing.received_by], ["Processing time", p.processing.processing_time],
        ["Verification", badge(p.processing.verification), "detail-verification"], p.processing.verified_by ? ["Verified by", p.processing.verified_by] : null]), verify),
      h("section", { class: "card", "aria-labelledby": "s-consumer" }, h("h2", { id: "s-consumer" }, "Consumer information"), facts([
        ["Consumer name", p.consumer.name], ["Account number", p.consumer.account_number], ["Service address", p.consumer.service_address],
        ["Phone", p.consumer.phone], ["Email", p.consumer.email]])),
      p.notes ? h("section", { class: "card", "aria-labelledby": "s-notes" }, h("h2", { id: "s-notes" }, "Notes"), h("p", {}, p.notes)) : null));
}

// --- Create Credit Note dialog ---

export async function creditNoteDialog(receiptNumber) {
  let payment;
  try {
    payment = await call("credit_notes", `/credit-notes/payments/${encodeURIComponent(receiptNumber)}`);
  } catch (error) {
    toast(error.status === 404 ? `Payment ${receiptNumber} is not known to credit notes yet; try again in a moment.` : error.message, true);
    return null;
  }
  const maxCents = toCents(payment.maximum_credit);
  const amount = h("input", { id: "cn-amount", inputmode: "decimal", value: payment.maximum_credit, autocomplete: "off" });
  const reason = select("cn-reason-select", payment.reasons, { placeholder: "Choose a reason" });
  const remarks = h("textarea", { id: "cn-remarks", rows: "3" });
  const remarksCounter = counted(remarks, REMARKS_MAX);
  const summary = h("div", { id: "cn-summary", class: "summary", "aria-live": "polite" });
  const create = h("button", { type: "button", id: "cn-create", class: "primary", disabled: true }, "Create Credit Note");
  const cancel = h("button", { type: "button", id: "cn-cancel" }, "Cancel");
  const amountField = field("Credit amount", amount, { required: true, hint: `Maximum: ${money(payment.maximum_credit, payment.currency)}` });
  const dialog = h("dialog", { id: "credit-note-dialog", "aria-labelledby": "cn-title" }, h("div", { class: "dialog-body" },
    h("h2", { id: "cn-title" }, "Create credit note"),
    h("section", { "aria-labelledby": "cn-payment-title" }, h("h3", { id: "cn-payment-title" }, "Payment details"), facts([
      ["Consumer name", payment.consumer_name], ["Account number", payment.account_number], ["Receipt number", payment.receipt_number],
      ["Payment amount", money(payment.payment_amount, payment.currency)], ["Payment date", day(payment.payment_date)], ["Payment method", payment.payment_method]])),
    h("h3", {}, "Credit note details"),
    h("p", { class: "hint" }, "The credit note number is given when it is created."),
    amountField, field("Reason for credit note", reason, { required: true }),
    h("div", { class: "field" }, h("label", { for: "cn-remarks" }, "Remarks (optional)"), remarks, remarksCounter),
    summary, h("p", { class: "error", role: "alert", id: "cn-error" }), h("div", { class: "actions" }, cancel, create)));
  const key = idempotencyKey();

  function update() {
    const cents = toCents(amount.value);
    const original = toCents(payment.payment_amount);
    let message = "";
    if (amount.value && cents === null) message = "Numbers with at most two decimals.";
    else if (cents !== null && cents <= 0n) message = "The credit amount must be above zero.";
    else if (cents !== null && cents > maxCents) message = `At most ${money(payment.maximum_credit, payment.currency)}.`;
    fieldError(amount, message);
    const credit = cents !== null && !message ? cents : 0n;
    const remaining = original - credit;
    summary.replaceChildren(h("h3", {}, "Summary"), facts([
      ["Original payment amount", money(payment.payment_amount, payment.currency)],
      ["Credit note amount", money(fromCents(credit), payment.currency), "cn-summary-credit"],
      ["Remaining payment value", money(fromCents(remaining < 0n ? 0n : remaining), payment.currency), "cn-summary-remaining"],
      remaining === 0n ? ["", "Full reversal"] : null]));
    create.disabled = Boolean(message) || cents === null || !reason.value;
  }
  amount.addEventListener("input", update);
  reason.addEventListener("change", update);
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  create.addEventListener("click", async () => {
    create.disabled = true;
    try {
      const note = await call("credit_notes", "/credit-notes", { method: "POST", headers: { "Idempotency-Key": key },
        body: { receipt_number: payment.receipt_number, amount: fromCents(toCents(amount.value)), reason: reason.value, remarks: remarks.value.trim() || null } });
      dialog.close();
      toast(`Credit note ${note.credit_note_number} created.`);
      location.hash = `#/credit-notes/${encodeURIComponent(note.credit_note_number)}`;
    } catch (error) {
      document.getElementById("cn-error").textContent = error.message;
      toast("The credit note was not created.", true);
      update();
    }
  });
  document.body.append(dialog);
  update();
  dialog.showModal();
  amount.focus();
  return dialog;
}

// --- credit note details ---

export async function creditNoteDetailsPage({ params }) {
  const number = params[0];
  let n;
  try {
    n = await call("credit_notes", `/credit-notes/${encodeURIComponent(number)}`);
  } catch (error) {
    view(`Credit note ${number}`, h("p", { class: "error", role: "alert" }, error.status === 404 ? "No such credit note." : error.message));
    return;
  }
  const f = n.financial;
  view(`Credit Note ${n.credit_note_number}`,
    h("p", {}, badge(n.status), " ", badge(n.reason, "reason")),
    h("div", { class: "grid", id: "credit-note-details" },
      h("section", { class: "card", "aria-labelledby": "c-consumer" }, h("h2", { id: "c-consumer" }, "Consumer information"), facts([["Name", n.consumer.name], ["Account", n.consumer.account_number]])),
      h("section", { class: "card", "aria-labelledby": "c-dates" }, h("h2", { id: "c-dates" }, "Dates"), facts([["Created", instant(n.dates.created_at)], ["Expires", instant(n.dates.expires_at), "cn-expires"],
        n.dates.expired_at ? ["Expired", instant(n.dates.expired_at)] : null])),
      h("section", { class: "card", "aria-labelledby": "c-fin" }, h("h2", { id: "c-fin" }, "Financial details"), facts([
        ["Original credit amount", money(f.original_amount, f.currency), "cn-original"], ["Applied amount", money(f.applied_amount, f.currency)],
        ["Remaining balance", money(f.remaining_balance, f.currency), "cn-remaining"], ["Usage", `${Number(f.usage_percentage).toFixed(1)}%`]])),
      h("section", { class: "card", "aria-labelledby": "c-info" }, h("h2", { id: "c-info" }, "Credit note information"), facts([
        ["Reason", badge(n.reason, "reason")], ["Created by", n.created_by], ["Status", badge(n.status)],
        ["Linked payment", h("a", { href: `#/payments/${encodeURIComponent(n.linked_payment.receipt_number)}`, id: "cn-linked" }, n.linked_payment.receipt_number)],
        n.remarks ? ["Remarks", n.remarks] : null]))),
    h("div", { class: "actions" },
      h("button", { type: "button", id: "cn-print", onclick: () => printDocument(creditNotePath(n.credit_note_number)) }, "Print"),
      h("button", { type: "button", id: "cn-download", onclick: () => downloadDocument(creditNotePath(n.credit_note_number), `${n.credit_note_number}.pdf`) }, "Download PDF"),
      h("button", { type: "button", id: "cn-close", onclick: () => history.length > 1 ? history.back() : (location.hash = "#/credit-notes") }, "Close")));
}
