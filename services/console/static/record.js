// Record Payment (the seed's counter form): consumer, channel, type, open item, method, summary, notes, review,
// confirm, and the receipt at once. The live summary is worked out here from the open item as the clerk types
// (due = the item's outstanding amount, difference = amount - due); the review shows what payments' own
// `POST /payments/preview` computes for the same body, and its refusals next to their fields.
import {
  ApiError, call, counted, day, downloadDocument, facts, field, fieldError, fromCents, h, idempotencyKey, money,
  printDocument, select, state, toCents, today, track, view, waitForDocument,
} from "./core.js";
import { consumerSearch } from "./consumer_search.js";

const TYPES = [["bill", "Bill", "unpaid_bills"], ["service", "Service", "unpaid_services"], ["installment", "Installment", "unpaid_installments"]];
const NOTES_MAX = 500;

export async function recordPaymentPage({ params }) {
  const [channels, methods] = await Promise.all([call("payments", "/settings/channels"), call("payments", "/settings/payment-methods")]);
  const form = { consumer: null, item: null, startedAt: null, key: null };

  const accountPanel = h("section", { id: "account-details", class: "card", "aria-labelledby": "account-title", hidden: true });
  const channel = select("channel", channels.channels, { value: channels.default_channel });
  const typeSet = h("fieldset", { id: "payment-type" }, h("legend", { class: "req" }, "Payment type"),
    h("div", { class: "choices" }, TYPES.map(([value, label]) => h("label", {}, h("input", { type: "radio", name: "payment_type", value, checked: value === "bill" }), label))));
  const items = h("fieldset", { id: "open-items", class: "items" }, h("legend", { class: "req" }, "Open items"), h("p", { class: "muted" }, "Choose a consumer first."));
  const method = select("method", methods.payment_methods, { placeholder: "Choose a method" });
  const amount = h("input", { id: "amount", inputmode: "decimal", autocomplete: "off", placeholder: "0.00" });
  const paymentDate = h("input", { id: "payment-date", type: "date", value: today(), max: today() });
  const cash = h("input", { id: "cash-received", inputmode: "decimal", autocomplete: "off", placeholder: "0.00" });
  const cashField = field("Amount received (cash)", cash, { hint: "What the customer handed over; the change is worked out." });
  cashField.hidden = true;
  const notes = h("textarea", { id: "notes", rows: "3" });
  const notesCounter = counted(notes, NOTES_MAX);
  const summary = h("section", { id: "payment-summary", class: "summary", "aria-live": "polite", "aria-labelledby": "summary-title" });
  const formError = h("p", { class: "error", role: "alert", id: "form-error" });
  const review = h("button", { type: "button", id: "review", class: "primary" }, "Review payment");

  const editor = h("form", { id: "record-form", novalidate: true },
    h("div", { class: "cols-2" },
      h("div", {},
        h("section", { class: "card", "aria-labelledby": "consumer-title" }, h("h2", { id: "consumer-title" }, "Consumer"), consumerSearch(choose)),
        accountPanel,
        h("section", { class: "card", "aria-labelledby": "payment-title" }, h("h2", { id: "payment-title" }, "Payment"),
          field("Channel", channel, { required: true }), typeSet, items,
          field("Payment method", method, { required: true }),
          field("Amount", amount, { required: true, hint: "Two decimals, e.g. 145.50." }), cashField,
          field("Payment date", paymentDate, { required: true }),
          h("div", { class: "field" }, h("label", { for: "notes" }, "Additional notes"), notes, notesCounter))),
      h("aside", {}, summary, formError, h("div", { class: "actions" }, review))));
  const reviewPanel = h("section", { id: "review-panel", class: "card", hidden: true, "aria-labelledby": "review-title" });
  const receiptPanel = h("section", { id: "receipt", class: "card", hidden: true, "aria-labelledby": "receipt-title" });
  view("Record payment", editor, reviewPanel, receiptPanel);

  const chosenType = () => editor.querySelector('input[name="payment_type"]:checked').value;

  async function choose(accountNumber) {
    try {
      form.consumer = await call("payments", "/consumers/" + encodeURIComponent(accountNumber));
    } catch (error) {
      accountPanel.hidden = false;
      accountPanel.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    form.startedAt = form.startedAt || Date.now();
    const c = form.consumer;
    accountPanel.hidden = false;
    accountPanel.replaceChildren(h("h2", { id: "account-title" }, "Account details"), facts([
      ["Name", c.name, "account-name"], ["Account number", c.account_number, "account-number"],
      ["Service address", c.service_address], ["Phone", c.phone], ["Email", c.email],
      ["Current balance", money(c.current_balance), "account-balance"],
    ]));
    fieldError(document.getElementById("consumer-search"), "");
    renderItems();
  }

  function renderItems() {
    const type = chosenType();
    const key = TYPES.find(([value]) => value === type)[2];
    const open = form.consumer ? form.consumer[key] : [];
    form.item = null;
    const legend = h("legend", { class: "req" }, { bill: "Unpaid bills", service: "Unpaid services", installment: "Unpaid installments" }[type]);
    if (!form.consumer) { items.replaceChildren(legend, h("p", { class: "muted" }, "Choose a consumer first.")); return update(); }
    if (!open.length) { items.replaceChildren(legend, h("p", { class: "muted", id: "no-items" }, "Nothing open of this type.")); return update(); }
    items.replaceChildren(legend, ...open.map((item, index) => h("label", {},
      h("input", { type: "radio", name: "item", value: item.item_reference, checked: index === 0, onchange: () => pick(item) }),
      h("span", {}, h("strong", {}, item.item_reference), " · ", item.description || "", item.period_or_date ? ` · ${item.period_or_date}` : "", ` · due ${day(item.due_date)}`),
      h("span", { class: "num" }, money(item.outstanding)))));
    pick(open[0]);
  }

  function pick(item) {
    form.item = item;
    amount.value = item.outstanding.amount;
    fieldError(amount, "");
    update();
  }

  function figures() {
    const paid = toCents(amount.value);
    const due = form.item ? toCents(form.item.outstanding.amount) : null;
    const received = toCents(cash.value);
    return { paid, due, received, isCash: method.value === "Cash" };
  }

  function update() {
    const { paid, due, received, isCash } = figures();
    cashField.hidden = !isCash;
    const rows = [["Payment amount", paid !== null && paid > 0n ? money(fromCents(paid)) : "—", "summary-amount"], ["Payment method", method.value || "—", "summary-method"]];
    if (due !== null) rows.push(["Amount due", money(fromCents(due)), "summary-due"]);
    if (due !== null && paid !== null && paid > 0n) {
      const difference = paid - due;
      if (difference < 0n) rows.push(["Outstanding after payment", money(fromCents(-difference)), "summary-outstanding"]);
      else if (difference > 0n) rows.push(["Extra paid (becomes a credit note)", money(fromCents(difference)), "summary-extra"]);
      else rows.push(["Difference", "Exact payment", "summary-exact"]);
    }
    if (isCash && received !== null && paid !== null && received >= paid) rows.push(["Change to give", money(fromCents(received - paid)), "summary-change"]);
    summary.replaceChildren(h("h2", { id: "summary-title" }, "Payment summary"), facts(rows),
      h("p", { class: "hint" }, "Worked out from the open item; nothing is saved until you confirm."));
  }

  function validate() {
    const { paid, due, received, isCash } = figures();
    const search = document.getElementById("consumer-search");
    const checks = [
      fieldError(search, form.consumer ? "" : "Choose a consumer."),
      fieldError(items.querySelector("input") || method, ""),
      fieldError(method, method.value ? "" : "Choose a payment method."),
      fieldError(amount, paid === null || paid <= 0n ? "Enter an amount above zero, with at most two decimals." : ""),
      fieldError(paymentDate, paymentDate.value ? "" : "Enter the payment date."),
      fieldError(cash, isCash && cash.value && (received === null || received < (paid ?? 0n)) ? "The cash received must cover the amount." : ""),
    ];
    const itemOk = Boolean(form.item);
    formError.textContent = itemOk ? "" : form.consumer ? "Choose the open item this payment is for." : "";
    void due;
    return checks.every(Boolean) && itemOk;
  }

  function paymentBody() {
    const { paid, received, isCash } = figures();
    return {
      account_number: form.consumer.account_number, payment_type: chosenType(), item_reference: form.item.item_reference,
      channel: channel.value, method: method.value, amount: fromCents(paid), payment_date: paymentDate.value,
      cash_received: isCash && received !== null ? fromCents(received) : null, notes: notes.value.trim() || null,
    };
  }

  // Where payments' preview problems are shown: next to the field they name.
  function inputFor(name) {
    return { amount, cash_received: cash, channel, method, payment_date: paymentDate, item_reference: items.querySelector("input") }[name] ?? null;
  }

  async function showReview() {
    if (!validate()) {
      editor.querySelector('[aria-invalid="true"]')?.focus();
      return;
    }
    let preview;
    try {
      preview = await call("payments", "/payments/preview", { method: "POST", body: paymentBody() });
    } catch (error) {
      formError.textContent = error instanceof ApiError && error.field ? `${error.field}: ${error.message}` : error.message;
      return;
    }
    if (!preview.valid) {
      const general = [];
      for (const problem of preview.problems) {
        const input = inputFor(problem.field);
        if (input) fieldError(input, problem.detail);
        else general.push(problem.detail);
      }
      formError.textContent = general.join(" ");
      (editor.querySelector('[aria-invalid="true"]') ?? formError).focus?.();
      return;
    }
    const { paid } = figures();
    form.key = form.key || idempotencyKey();
    const c = form.consumer;
    const a = preview.analysis;
    const difference = a.difference.replace(/^-/, "");
    reviewPanel.replaceChildren(h("h2", { id: "review-title", tabindex: "-1" }, "Review and confirm"),
      h("div", { class: "grid" },
        h("div", {}, h("h3", {}, "Account summary"), facts([["Consumer", c.name], ["Account", c.account_number], ["Current balance (outstanding)", money(c.current_balance)]])),
        h("div", {}, h("h3", {}, "Payment summary"), facts([
          ["Payment type", chosenType()], ["Item", form.item.item_reference], ["Payment channel", channel.value], ["Payment method", method.value],
          ["Total amount", money(fromCents(paid)), "review-amount"],
          ["Amount due", money(a.due), "review-due"],
          a.outcome === "over" ? ["Extra paid (becomes a credit note)", money(difference), "review-extra"] : a.outcome === "under" ? ["Still outstanding", money(difference), "review-outstanding"] : ["Difference", "Exact payment", "review-exact"],
          preview.change_given !== null ? ["Change to give", money(preview.change_given), "review-change"] : null,
          ["Payment date", day(paymentDate.value)], ["Recorded by", state.session.user.name, "review-recorded-by"],
          notes.value ? ["Notes", notes.value] : null,
        ]))),
      h("p", { class: "error", role: "alert", id: "confirm-error" }),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "confirm", class: "primary", onclick: confirm }, "Confirm payment"),
        h("button", { type: "button", id: "edit", onclick: () => { reviewPanel.hidden = true; editor.hidden = false; review.focus(); } }, "Back to edit")));
    editor.hidden = true;
    reviewPanel.hidden = false;
    document.getElementById("review-title").focus();
  }

  async function confirm(event) {
    const button = event.currentTarget;
    button.disabled = true;
    const body = paymentBody();
    const confirmedAt = Date.now();
    try {
      const payment = await call("payments", "/payments", { method: "POST", body, headers: { "Idempotency-Key": form.key } });
      showReceipt(payment, Math.round((Date.now() - confirmedAt) / 1000));
    } catch (error) {
      button.disabled = false;
      document.getElementById("confirm-error").textContent = error instanceof ApiError && error.field ? `${error.field}: ${error.message}` : error.message;
    }
  }

  async function showReceipt(payment, processingSeconds) {
    reviewPanel.hidden = true;
    const number = payment.receipt_number;
    const pdf = `/receipts/${encodeURIComponent(number)}.pdf`;
    const frame = h("iframe", { id: "receipt-pdf", class: "receipt-frame", title: `Receipt ${number} (PDF)` });
    const frameStatus = h("p", { class: "hint", id: "receipt-status", "aria-live": "polite" }, "Preparing the receipt…");
    const a = payment.amount_analysis;
    receiptPanel.replaceChildren(
      h("h2", { id: "receipt-title", tabindex: "-1" }, `Payment recorded · Receipt ${number}`),
      h("div", { class: "grid" },
        facts([["Receipt number", number, "receipt-number"], ["Payment ID", payment.payment_id], ["Transaction ID", payment.transaction_id],
          ["Status", payment.status, "receipt-payment-status"], ["Verification", payment.verification], ["Processing time", payment.processing_time]]),
        facts([["Consumer", `${payment.consumer.name} (${payment.consumer.account_number})`], [a.due_label, money(a.due)], ["Amount paid", money(a.paid), "receipt-amount"],
          ["Difference", `${money(a.difference)} · ${a.outcome}`, "receipt-outcome"],
          payment.cash ? ["Change given", money(payment.cash.change_given)] : null, ["Received by", payment.received_by]])),
      payment.analysis.outcome === "over" ? h("p", { class: "notice", id: "credit-note-notice" }, `The extra ${money(a.difference)} becomes a credit note on the account; it appears in the Credit Notes tab.`) : null,
      frameStatus, frame,
      h("div", { class: "actions" },
        h("button", { type: "button", id: "print-receipt", onclick: () => printDocument(pdf) }, "Print receipt"),
        h("button", { type: "button", id: "download-receipt", onclick: () => downloadDocument(pdf, `${number}.pdf`) }, "Download PDF"),
        h("button", { type: "button", id: "record-another", class: "primary", onclick: () => recordPaymentPage({ params: [] }) }, "Record another payment"),
        h("button", { type: "button", id: "return-dashboard", onclick: () => { location.hash = state.session.home; } }, "Return to dashboard")));
    receiptPanel.hidden = false;
    document.getElementById("receipt-title").focus();
    let generated = false;
    try {
      const blob = await waitForDocument(pdf);
      frame.src = URL.createObjectURL(blob);
      frame.dataset.loaded = blob.type;
      frameStatus.textContent = `Receipt ${number} is ready to print or download.`;
      generated = true;
    } catch (error) {
      frameStatus.textContent = `The receipt could not be shown: ${error.message}`;
    }
    // The seed's customer_wait_time: from choosing the consumer to the receipt on screen (or given up on).
    const waited = Math.round((Date.now() - (form.startedAt ?? Date.now())) / 1000);
    receiptPanel.dataset.customerWaitSeconds = String(waited);
    track("payment_processed", { payment_id: payment.payment_id, amount: payment.amount, method: payment.method ?? method.value,
      processing_time_seconds: processingSeconds, customer_wait_time_seconds: waited, receipt_generated: generated });
  }

  typeSet.addEventListener("change", renderItems);
  for (const input of [amount, cash, method]) input.addEventListener("input", update);
  method.addEventListener("change", update);
  review.addEventListener("click", showReview);
  editor.addEventListener("submit", (event) => { event.preventDefault(); showReview(); });
  update();
  if (params && params[0]) await choose(params[0]);
}
