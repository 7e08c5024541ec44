// The customer executive's customer service portal: find a consumer, see their account, balance, open items and
// payment history, open a payment's details, record a payment for them.
import { badge, call, day, facts, field, h, money, select, toast, track, view } from "./core.js";
import { consumerSearch } from "./consumer_search.js";

export async function customerServicePage({ params }) {
  const account = h("div", { id: "portal-account" });
  view("Customer service", h("section", { class: "card", "aria-labelledby": "cs-find" }, h("h2", { id: "cs-find" }, "Find a customer"),
    consumerSearch((number) => { location.hash = `#/customer-service/${encodeURIComponent(number)}`; }, { label: "Customer name or account number", id: "portal-search" })), account);
  if (!params[0]) return;
  const openedAt = Date.now();
  let c;
  try {
    c = await call("payments", `/consumers/${encodeURIComponent(params[0])}`);
  } catch (error) {
    account.replaceChildren(h("p", { class: "error", role: "alert" }, error.status === 404 ? "No such account." : error.message));
    return;
  }
  const items = (title, list) => h("section", { class: "card", "aria-label": title }, h("h3", {}, title), list.length
    ? h("ul", {}, list.map((i) => h("li", {}, `${i.item_reference} · ${i.description ?? ""} · due ${day(i.due_date)} · ${money(i.outstanding)} outstanding`)))
    : h("p", { class: "muted" }, "Nothing open."));
  account.replaceChildren(
    h("section", { class: "card", "aria-labelledby": "cs-account" }, h("h2", { id: "cs-account" }, `${c.name} · ${c.account_number}`),
      facts([["Service address", c.service_address], ["Phone", c.phone], ["Email", c.email], ["Current balance", money(c.current_balance), "cs-balance"]]),
      h("div", { class: "actions" }, h("a", { href: `#/record-payment?account=${encodeURIComponent(c.account_number)}`, id: "cs-record" }, "Record a payment for this customer"))),
    h("div", { class: "grid" }, items("Unpaid bills", c.unpaid_bills), items("Unpaid services", c.unpaid_services), items("Unpaid installments", c.unpaid_installments)),
    h("section", { class: "card", "aria-labelledby": "cs-history" }, h("h2", { id: "cs-history" }, "Payment history"),
      h("div", { class: "table-wrap" }, h("table", { id: "cs-history-table", class: "stack" },
        h("thead", {}, h("tr", {}, ["Receipt #", "Amount", "Method", "Date", "Type", "Status"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, c.payment_history.length ? c.payment_history.map((p) => h("tr", {},
          h("td", { "data-label": "Receipt #" }, h("a", { href: `#/payments/${encodeURIComponent(p.receipt_number)}` }, p.receipt_number)),
          h("td", { "data-label": "Amount", class: "num" }, money(p.amount)), h("td", { "data-label": "Method" }, p.method),
          h("td", { "data-label": "Date" }, day(p.date)), h("td", { "data-label": "Type" }, p.type), h("td", { "data-label": "Status" }, badge(p.status))))
          : [h("tr", {}, h("td", { colspan: "6", class: "empty" }, "No payments yet."))])))),
    inquiryForm(openedAt));
}

const INQUIRIES = [["balance", "Balance"], ["payment_status", "Payment status"], ["receipt", "Receipt copy"], ["credit_note", "Credit note"], ["other", "Other"]];

// The seed's payment_inquiry_resolved: what the customer asked, how long it took from opening the account, and
// whether it had to go further.
function inquiryForm(openedAt) {
  const kind = select("inquiry-type", INQUIRIES, { value: "balance" });
  const escalated = h("input", { id: "inquiry-escalated", type: "checkbox" });
  const satisfaction = select("inquiry-satisfaction", [["", "Not asked"], ["5", "5 · very satisfied"], ["4", "4"], ["3", "3"], ["2", "2"], ["1", "1 · not satisfied"]]);
  const done = h("p", { class: "hint", id: "inquiry-status", "aria-live": "polite" });
  return h("section", { class: "card", "aria-labelledby": "cs-inquiry" }, h("h2", { id: "cs-inquiry" }, "Close the inquiry"),
    h("form", { id: "inquiry-form", onsubmit: async (event) => {
      event.preventDefault();
      await track("payment_inquiry_resolved", { inquiry_type: kind.value, resolution_time_seconds: Math.round((Date.now() - openedAt) / 1000),
        escalation_required: escalated.checked, customer_satisfaction: satisfaction.value ? Number(satisfaction.value) : null });
      done.textContent = "Inquiry recorded as resolved.";
      done.dataset.sent = "true";
      toast("Inquiry recorded as resolved.");
    } }, h("div", { class: "filters" }, field("What the customer asked about", kind), field("Customer satisfaction", satisfaction),
      h("label", { class: "check" }, escalated, " Escalated to a supervisor")),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "inquiry-resolved" }, "Mark inquiry resolved")), done));
}
