// Consumer search (name or account number, any part, case-insensitive on the server) shared by the counter pages.
import { call, h } from "./core.js";

export function consumerSearch(onChoose, { label = "Search consumer", id = "consumer-search" } = {}) {
  const input = h("input", { id, type: "search", autocomplete: "off", placeholder: "Name or account number", "aria-controls": id + "-results", "aria-describedby": id + "-hint" });
  const hint = h("p", { class: "hint", id: id + "-hint" }, "At least 2 characters; matches any part of a name or account number.");
  const results = h("ul", { id: id + "-results", class: "results", "aria-live": "polite", "aria-label": "Matching consumers" });
  let timer = null;
  let generation = 0;
  async function search() {
    const q = input.value.trim();
    const mine = ++generation;
    if (q.length < 2) { results.replaceChildren(); return; }
    try {
      const answer = await call("payments", "/consumers?q=" + encodeURIComponent(q));
      if (mine !== generation) return;
      if (!answer.consumers.length) { results.replaceChildren(h("li", { class: "muted" }, "No consumer matches.")); return; }
      results.replaceChildren(...answer.consumers.map((c) => h("li", {},
        h("button", { type: "button", class: "result", dataset: { account: c.account_number }, onclick: () => { results.replaceChildren(); onChoose(c.account_number); } },
          `${c.name} · ${c.account_number}`, c.service_address ? ` · ${c.service_address}` : ""))));
    } catch (error) {
      results.replaceChildren(h("li", { class: "error" }, error.message));
    }
  }
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 250); });
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") { event.preventDefault(); clearTimeout(timer); search(); } });
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint, results);
}
