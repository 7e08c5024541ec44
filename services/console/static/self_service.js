// The customer's own pages: balance, open bills, payments with receipts, credit notes, the payment arrangement,
// online payment. Every call names the token's own account; the services answer 404 for any other (accounts
// cannot be probed). The endpoints are listed in README.md (console section, "The endpoints the pages use").
import { ApiError, badge, call, day, facts, h, idempotencyKey, instant, money, state, toast, view } from "./core.js";

const FOLLOW_MS = 2000;

function missing(error, what) {
  const unavailable = error instanceof ApiError && (error.code === "not_deployed" || error.status === 0 || error.status === 503);
  return h("p", { class: unavailable ? "notice" : "error", role: "alert" }, unavailable ? `${what} cannot be shown right now; please try again later.` : error.message);
}

export async function myAccountPage() {
  const account = state.session.user.account_number;
  const base = `/accounts/${encodeURIComponent(account)}`;
  const summary = h("section", { class: "card", id: "my-summary", "aria-labelledby": "my-summary-title" });
  const payments = h("section", { class: "card", id: "my-payments", "aria-labelledby": "my-payments-title" });
  const credits = h("section", { class: "card", id: "my-credit-notes", "aria-labelledby": "my-credits-title" });
  const plan = h("section", { class: "card", id: "my-arrangement", "aria-labelledby": "my-plan-title", hidden: !state.config.services.collections });
  const paying = h("section", { class: "card", id: "my-online-payment", hidden: true, "aria-live": "polite" });
  view("My account", summary, paying, payments, credits, plan);

  // Balance, open bills and payments: read again once an online payment is posted.
  async function loadBalance() {
    try {
      const s = await call("payments", base);
      summary.replaceChildren(h("h2", { id: "my-summary-title" }, `${s.name} · ${s.account_number}`),
        facts([["Service address", s.service_address], ["Balance", money(s.current_balance), "my-balance"]]),
        h("h3", {}, "Open bills"),
        s.open_items.length ? h("ul", { id: "my-open-items" }, s.open_items.map((i) => h("li", {},
          `${i.item_reference} · ${i.description ?? i.payment_type} · due ${day(i.due_date)} · ${money(i.outstanding)} `,
          h("button", { type: "button", class: "primary", dataset: { item: i.item_reference }, onclick: () => payOnline(i) }, `Pay ${money(i.outstanding)} online`))))
          : h("p", { class: "muted" }, "Nothing to pay. Thank you!"));
    } catch (error) { summary.replaceChildren(h("h2", { id: "my-summary-title" }, "Balance"), missing(error, "Your balance")); }
  }

  async function loadPayments() {
    try {
      const p = await call("payments", base + "/payments");
      payments.replaceChildren(h("h2", { id: "my-payments-title" }, "Payments"), h("div", { class: "table-wrap" }, h("table", { id: "my-payments-table", class: "stack" },
        h("thead", {}, h("tr", {}, ["Receipt #", "Date", "Amount", "Method", "For", "Status", "Settlement", "Receipt"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, p.payments.length ? p.payments.map((x) => h("tr", { dataset: { receipt: x.receipt_number } },
          h("td", { "data-label": "Receipt #" }, x.receipt_number), h("td", { "data-label": "Date" }, day(x.date)), h("td", { "data-label": "Amount", class: "num" }, money(x.amount)),
          h("td", { "data-label": "Method" }, x.method), h("td", { "data-label": "For" }, x.item_reference), h("td", { "data-label": "Status" }, badge(x.status)),
          h("td", { "data-label": "Settlement" }, x.settlement_status ?? "—"),
          h("td", { "data-label": "Receipt" }, h("button", { type: "button", class: "download", onclick: () => download(x.receipt_number) }, "Download"))))
          : [h("tr", {}, h("td", { colspan: "8", class: "empty" }, "No payments yet."))]))));
    } catch (error) { payments.replaceChildren(h("h2", { id: "my-payments-title" }, "Payments"), missing(error, "Your payments")); }
  }

  await loadBalance();
  await loadPayments();

  try {
    const c = await call("credit_notes", base + "/credit-notes");
    credits.replaceChildren(h("h2", { id: "my-credits-title" }, "Credit notes"), c.items.length ? h("ul", {}, c.items.map((n) => h("li", {},
      `${n.credit_note_number}: ${money(n.remaining, n.currency)} left of ${money(n.amount, n.currency)} · expires ${instant(n.expires_at)} `, badge(n.status))))
      : h("p", { class: "muted" }, "No credit notes."));
  } catch (error) { credits.replaceChildren(h("h2", { id: "my-credits-title" }, "Credit notes"), missing(error, "Your credit notes")); }

  if (state.config.services.collections) {
    try {
      const a = await call("collections", base + "/arrangement");
      const next = a.next_installment;
      plan.replaceChildren(h("h2", { id: "my-plan-title" }, "Payment arrangement"), a.arrangement ? h("div", {},
        facts([["Arrangement", a.arrangement.arrangement_id], ["Status", a.arrangement.status, "my-plan-status"], ["Total", money(a.arrangement.total)],
          ["Paid", money(a.arrangement.paid)], ["Remaining", money(a.arrangement.remaining)],
          ["Next installment", next ? `${next.item_reference} · ${money(next.amount)} due ${day(next.due_date)}` : "Nothing due", "my-next-installment"]]))
        : h("p", { class: "muted", id: "my-next-installment" }, "You have no payment arrangement."));
    } catch (error) { plan.replaceChildren(h("h2", { id: "my-plan-title" }, "Payment arrangement"), missing(error, "Your arrangement")); }
  }

  async function download(receipt) {
    try {
      const response = await call("receipts", `${base}/receipts/${encodeURIComponent(receipt)}.pdf?download=true`, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const anchor = h("a", { href: url, download: `${receipt}.pdf`, hidden: true });
      document.body.append(anchor); anchor.click(); anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) { toast(error.message, true); }
  }

  async function payOnline(item) {
    paying.hidden = false;
    paying.replaceChildren(h("h2", {}, `Paying ${item.item_reference}`), h("p", { id: "pay-status" }, "Starting the payment…"));
    // Card entry (Stripe Elements with the intent's client_secret) is not built: the card is confirmed with Stripe
    // outside this page, and the payment arrives through Stripe's webhook; the page follows it to Posted.
    try {
      const intent = await call("payments", base + "/payment-intents", { method: "POST", headers: { "Idempotency-Key": idempotencyKey() },
        body: { payment_type: item.payment_type, item_reference: item.item_reference } });
      paying.dataset.intent = intent.payment_intent_id;
      follow(intent.payment_intent_id);
    } catch (error) { paying.replaceChildren(h("h2", {}, "Online payment"), missing(error, "Online payment")); }
  }

  async function follow(id) {
    const status = document.getElementById("pay-status");
    try {
      const p = await call("payments", `${base}/payment-intents/${encodeURIComponent(id)}`);
      status.replaceChildren("Status: ", badge(p.status, p.status), p.receipt_number ? ` · receipt ${p.receipt_number}` : "");
      status.dataset.status = p.status;
      if (p.status === "Pending") setTimeout(() => document.getElementById("pay-status") && follow(id), FOLLOW_MS);
      else if (p.status === "Posted") {
        toast("Payment received. Thank you!");
        await Promise.all([loadBalance(), loadPayments()]);
      }
    } catch (error) { status.textContent = error.message; }
  }
}
