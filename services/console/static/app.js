// The console's single page: sign-in, the role's navigation, and a hash router over the pages.
import { call, clearSession, h, loadConfig, restoreSession, saveSession, state, toast, token, ApiError } from "./core.js";
import { paymentsPage, paymentDetailsPage, creditNoteDetailsPage } from "./payments.js";
import { recordPaymentPage } from "./record.js";
import { dashboardPage, reportsPage, alertsPage, approvalsPage, collectionsPage } from "./manager.js";
import { customerServicePage } from "./service_portal.js";
import { myAccountPage } from "./self_service.js";

const STAFF = ["customer_executive", "recovery_executive", "billing_manager", "admin"];

// route pattern -> [page, which navigation entry it belongs to (the role must have it), roles allowed otherwise]
const ROUTES = [
  [/^#\/dashboard$/, dashboardPage, "#/dashboard"],
  [/^#\/reports$/, reportsPage, "#/reports"],
  [/^#\/alerts$/, alertsPage, "#/alerts"],
  [/^#\/approvals$/, approvalsPage, "#/approvals"],
  [/^#\/collections$/, collectionsPage, "#/collections"],
  [/^#\/customer-service(?:\/([^/?]+))?$/, customerServicePage, "#/customer-service"],
  [/^#\/record-payment(?:\?account=([^&]+))?$/, recordPaymentPage, "#/record-payment"],
  [/^#\/payments$/, (ctx) => paymentsPage(ctx, "payments"), "#/payments"],
  [/^#\/credit-notes$/, (ctx) => paymentsPage(ctx, "credit-notes"), "#/payments"],
  [/^#\/payments\/([^/]+)$/, paymentDetailsPage, "#/payments"],
  [/^#\/credit-notes\/([^/]+)$/, creditNoteDetailsPage, "#/payments"],
  [/^#\/my-account$/, myAccountPage, "#/my-account"],
];

function showSignIn(message = "") {
  document.getElementById("signin-page").hidden = false;
  document.getElementById("view").replaceChildren();
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("signin-error").textContent = message;
  document.title = "Sign in · Paydesk";
  if (location.hash !== "#/signin") history.replaceState(null, "", "#/signin");
  document.getElementById("username").focus();
}

function showChrome() {
  const session = state.session;
  document.getElementById("signin-page").hidden = true;
  const list = document.querySelector("#nav ul");
  list.replaceChildren(...session.navigation.map((entry) => h("li", {}, h("a", { href: entry.route }, entry.label))));
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("user-name").textContent = session.user.name;
  document.getElementById("user-role").textContent = session.user.roles.map((r) => r.replace("_", " ")).join(", ");
}

function markCurrent(entry) {
  document.querySelectorAll("#nav a").forEach((a) => {
    if (a.getAttribute("href") === entry) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
}

export function goHome() {
  location.hash = state.session.home;
}

async function route() {
  if (!state.session) return showSignIn();
  showChrome();
  const hash = location.hash || state.session.home;
  const allowed = new Set(state.session.navigation.map((entry) => entry.route));
  for (const [pattern, page, entry] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    if (!allowed.has(entry)) {
      toast("That page is not available for your role.", true);
      return goHome();
    }
    markCurrent(entry);
    const context = { params: match.slice(1).map((p) => (p ? decodeURIComponent(p) : p)), staff: state.session.user.roles.some((r) => STAFF.includes(r)) };
    try {
      await page(context);
    } catch (error) {
      document.getElementById("view").replaceChildren(h("p", { class: "error", role: "alert" }, error.message || String(error)));
    }
    document.getElementById("page-title")?.focus();
    return;
  }
  goHome();
}

async function signIn(event) {
  event.preventDefault();
  const username = document.getElementById("username");
  const password = document.getElementById("password");
  const error = document.getElementById("signin-error");
  if (!username.value.trim() || !password.value) {
    error.textContent = "Enter your user name and password.";
    return;
  }
  try {
    const answer = await call("console", "/session", { method: "POST", body: { username: username.value, password: password.value } });
    saveSession(answer);
    password.value = "";
    error.textContent = "";
    location.hash = answer.home;
    await route();
  } catch (failure) {
    error.textContent = failure instanceof ApiError && failure.status === 401 ? "User name or password is wrong." : failure.message;
    password.focus();
  }
}

async function signOut() {
  try { await call("console", "/session", { method: "DELETE" }); } catch { /* the token expires anyway */ }
  clearSession();
  showSignIn("You have signed out.");
}

async function main() {
  await loadConfig();
  document.getElementById("signin").addEventListener("submit", signIn);
  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("paydesk:signed-out", (event) => showSignIn(event.detail));
  window.addEventListener("hashchange", route);
  restoreSession();
  if (state.session && token()) {
    try {
      const fresh = await call("console", "/session");
      state.session = { ...state.session, ...fresh };
    } catch {
      clearSession();
    }
  }
  document.body.dataset.ready = "true";
  await route();
}

main();
