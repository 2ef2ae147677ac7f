// Switchyard's admin dashboard: a thin client of the admin API (/admin/v1). It signs in for a session
// cookie (HttpOnly: the page never sees it) and sends the session's CSRF token, held in memory only, on
// every change. Every value from the server is put on the page as text (textContent), never as markup.
"use strict";

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));
let me = null; // GET /admin/v1/session
let csrf = null;
let orgNames = new Map();
let keyNames = new Map();
let currentTab = "keys";
let eventsOffset = 0;
const PAGE = 50;
// The plan a key gets when none is named (tenancy's default).
const DEFAULT_PLAN = "free";

function status(message, isError = false) {
  const el = $("#status");
  el.textContent = message || "";
  el.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (_) { /* empty or not JSON */ }
  if (!resp.ok) {
    const err = new Error((data && data.error && data.error.message) || resp.statusText);
    err.status = resp.status;
    err.body = data;
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;
const isAdmin = () => me && me.role === "admin";
// Gateway-wide: an admin, or a viewer of no one organisation (the gateway's health and audit are theirs to read).
const isGatewayWide = () => me && (me.role === "admin" || (me.role === "viewer" && !me.organization_id));
const canWrite = () => me && (me.role === "admin" || me.role === "org_admin");

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(label, cls, onClick, aria) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = "small " + (cls || "");
  if (aria) b.setAttribute("aria-label", aria);
  b.addEventListener("click", () => guarded(onClick));
  return b;
}

// A moment from the API (RFC 3339) for people: "2027-01-01 09:30 UTC".
function when(at) {
  if (!at) return "—";
  const d = new Date(at);
  return Number.isNaN(d.getTime()) ? String(at) : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

const intFmt = new Intl.NumberFormat("en-US");
function num(n) { return n === null || n === undefined ? "—" : intFmt.format(n); }

// Money for people: "$1,234.56", small amounts with enough digits to be seen, unknown as "—".
function money(usd) {
  if (usd === null || usd === undefined || Number.isNaN(usd)) return "—";
  if (usd === 0) return "$0.00";
  const digits = Math.abs(usd) >= 1 ? 2 : Math.min(6, Math.max(2, 2 - Math.floor(Math.log10(Math.abs(usd)))));
  return "$" + usd.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
}
const micros = (m) => (m === null || m === undefined ? null : m / 1e6);

function fill(tbody, rows, render) {
  tbody.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    render(tr, r);
    tbody.appendChild(tr);
  }
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(tr, "Nothing yet.");
    td.colSpan = tbody.closest("table").querySelectorAll("thead th").length;
    tbody.appendChild(tr);
  }
}

async function guarded(work) {
  try {
    status("");
    await work();
  } catch (e) {
    if (e.status === 401 && me) {
      // A fresh page: nothing of the last session's data, forms or roles stays behind.
      location.reload();
    } else if (e.status === 401) {
      showSignIn("Your session has ended: sign in again.");
    } else {
      status(e.message, true);
    }
  }
}

function optional(form, name) {
  const v = form[name] && form[name].value.trim();
  return v === "" || v === undefined ? undefined : v;
}
function optionalInt(form, name) {
  const v = optional(form, name);
  return v === undefined ? undefined : Number.parseInt(v, 10);
}
const list = (s) => (s || "").split(",").map((x) => x.trim()).filter(Boolean);

// --- signing in ---

function showSignIn(message) {
  me = null;
  $("#new-secret").hidden = true;
  $("#new-secret-value").textContent = "";
  csrf = null;
  $("#tabs").hidden = true;
  $("#me").hidden = true;
  for (const s of $$("main > section")) s.hidden = s.id !== "login";
  status(message || "", Boolean(message));
}

async function signedIn() {
  me = await api("GET", "/admin/v1/session");
  csrf = me.csrf_token;
  $("#me-name").textContent = (me.account ? me.account.email : "master key") + " · " + me.role.replace("_", " ");
  $("#me").hidden = false;
  $("#tabs").hidden = false;
  for (const el of $$("[data-admin]")) el.hidden = !isAdmin();
  for (const el of $$("[data-gateway]")) el.hidden = !isGatewayWide();
  for (const el of $$("form")) if (el.id !== "login-form" && !el.classList.contains("filters") && el.id !== "org-edit") {
    if (!canWrite()) el.hidden = true;
  }
  await loadOrgNames();
  await loadPlans();
  show(me.role === "admin" ? "orgs" : "keys");
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    const body = f.master_key.value ? { master_key: f.master_key.value } : { email: f.email.value, password: f.password.value };
    try {
      await api("POST", "/admin/v1/session", body);
    } catch (e) {
      status(e.message, true);
      return;
    }
    f.reset();
    await signedIn();
  });
});

$("#logout").addEventListener("click", () => guarded(async () => {
  await api("DELETE", "/admin/v1/session");
  // A fresh page: the next person sees nothing of this session.
  location.reload();
}));

// --- tabs ---

function show(tab) {
  currentTab = tab;
  for (const s of $$("main > section")) s.hidden = s.id !== tab;
  for (const b of $$("#tabs button")) {
    if (b.dataset.tab === tab) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  }
  const load = { orgs: loadOrgs, members: loadMembers, keys: loadKeys, plans: loadPlans, usage: loadUsage,
    requests: loadEvents, billing: loadBilling, health: loadHealth, audit: loadAudit, reference: loadReference }[tab];
  guarded(load);
}
for (const b of $$("#tabs button")) b.addEventListener("click", () => show(b.dataset.tab));

// --- organizations ---

async function loadOrgNames() {
  const orgs = await api("GET", "/admin/v1/organizations?limit=500&sort=name");
  orgNames = new Map(orgs.data.map((o) => [o.id, o.name]));
  for (const sel of $$(".org-select")) {
    const keep = sel.value;
    sel.replaceChildren();
    if (sel.dataset.all) sel.appendChild(new Option(sel.dataset.all, ""));
    for (const o of orgs.data) sel.appendChild(new Option(o.name, o.id));
    if (keep) sel.value = keep;
  }
  return orgs.data;
}

async function loadOrgs() {
  const orgs = await loadOrgNames();
  fill($("#org-table tbody"), orgs, (tr, o) => {
    cell(tr, o.name);
    cell(tr, o.id).className = "muted";
    cell(tr, o.blocked_providers.join(", "));
    cell(tr, o.allowed_regions.join(", "));
    cell(tr, o.allow_cheaper_swaps ? "on" : "off");
    cell(tr, o.model_fallbacks ? "on" : "off");
    cell(tr, o.stream_continuation ? "on" : "off");
    cell(tr, when(o.created_at));
    const actions = document.createElement("td");
    if (isAdmin()) {
      actions.appendChild(button("Settings", "secondary", () => editOrg(o), "Settings of " + o.name));
      actions.appendChild(button("Delete", "danger", async () => {
        if (!confirm("Delete organization " + o.name + " and all its keys? This cannot be undone.")) return;
        await api("DELETE", "/admin/v1/organizations/" + enc(o.id));
        status("Deleted " + o.name + ".");
        await loadOrgs();
      }, "Delete " + o.name));
    }
    tr.appendChild(actions);
  });
}

function editOrg(o) {
  const f = $("#org-edit");
  f.hidden = false;
  $("#org-edit-name").textContent = o.name;
  f.id.value = o.id;
  f.name.value = o.name;
  f.blocked.value = o.blocked_providers.join(", ");
  f.regions.value = o.allowed_regions.join(", ");
  f.swaps.checked = o.allow_cheaper_swaps;
  f.fallbacks.checked = o.model_fallbacks;
  f.continuation.checked = o.stream_continuation;
  f.name.focus();
}
$("#org-edit-cancel").addEventListener("click", () => { $("#org-edit").hidden = true; });
$("#org-edit").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    await api("PATCH", "/admin/v1/organizations/" + enc(f.id.value), {
      name: f.name.value, blocked_providers: list(f.blocked.value), allowed_regions: list(f.regions.value),
      allow_cheaper_swaps: f.swaps.checked, model_fallbacks: f.fallbacks.checked, stream_continuation: f.continuation.checked,
    });
    f.hidden = true;
    status("Saved.");
    await loadOrgs();
  });
});
$("#org-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    await api("POST", "/admin/v1/organizations", {
      name: f.name.value, allow_cheaper_swaps: f.swaps.checked, allowed_regions: list(f.regions.value),
    });
    f.reset();
    status("Organization created.");
    await loadOrgs();
  });
});

// --- members and management keys ---

async function loadMembers() {
  await loadOrgNames();
  const accounts = await api("GET", "/admin/v1/accounts?limit=500");
  fill($("#member-table tbody"), accounts.data, (tr, a) => {
    cell(tr, a.email);
    cell(tr, a.name);
    cell(tr, a.role.replace("_", " "));
    cell(tr, a.organization_id ? orgNames.get(a.organization_id) || a.organization_id : "whole gateway");
    cell(tr, a.disabled ? "disabled" : "active").className = a.disabled ? "bad" : "good";
    cell(tr, when(a.last_sign_in_at));
    const actions = document.createElement("td");
    if (canWrite()) {
      actions.appendChild(button(a.disabled ? "Enable" : "Disable", "secondary", async () => {
        await api("PATCH", "/admin/v1/accounts/" + enc(a.id), { disabled: !a.disabled });
        await loadMembers();
      }, (a.disabled ? "Enable " : "Disable ") + a.email));
      actions.appendChild(button("Remove", "danger", async () => {
        if (!confirm("Remove " + a.email + "?")) return;
        await api("DELETE", "/admin/v1/accounts/" + enc(a.id));
        await loadMembers();
      }, "Remove " + a.email));
    }
    tr.appendChild(actions);
  });
  if (!canWrite()) return;
  const keys = await api("GET", "/admin/v1/management_keys");
  fill($("#mgmt-table tbody"), keys.data, (tr, k) => {
    cell(tr, k.name);
    cell(tr, k.display_prefix + "…");
    cell(tr, orgNames.get(k.organization_id) || k.organization_id);
    cell(tr, k.status);
    cell(tr, when(k.created_at));
    const actions = document.createElement("td");
    if (k.status === "active") {
      actions.appendChild(button("Revoke", "danger", async () => {
        if (!confirm("Revoke management key " + k.name + "?")) return;
        await api("POST", "/admin/v1/management_keys/" + enc(k.id) + "/revoke");
        await loadMembers();
      }, "Revoke management key " + k.name));
    }
    tr.appendChild(actions);
  });
}

$("#member-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    const body = { email: f.email.value, password: f.password.value, role: f.role.value, name: optional(f, "name") };
    if (f.role.value !== "admin" && f.organization_id.value) body.organization_id = f.organization_id.value;
    await api("POST", "/admin/v1/accounts", body);
    f.reset();
    status("Member added.");
    await loadMembers();
  });
});

$("#mgmt-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    const made = await api("POST", "/admin/v1/management_keys", { organization_id: f.organization_id.value, name: optional(f, "name") });
    showSecret("The new management key, shown once: copy it now.", made.key);
    show("keys");
  });
});

// --- keys ---

function showSecret(what, secret) {
  $("#new-secret-what").textContent = what;
  $("#new-secret-value").textContent = secret;
  $("#new-secret").hidden = false;
}
$("#copy-secret").addEventListener("click", async () => {
  const text = $("#new-secret-value").textContent;
  try {
    await navigator.clipboard.writeText(text);
    status("Copied.");
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents($("#new-secret-value"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    status("Selected: press Ctrl+C (⌘C) to copy.");
  }
});
$("#dismiss-secret").addEventListener("click", () => {
  $("#new-secret").hidden = true;
  $("#new-secret-value").textContent = "";
});

async function spendByKey() {
  // This month's spend per key, from the billing statement.
  try {
    const bill = await api("GET", "/admin/v1/billing");
    return new Map(bill.keys.map((k) => [k.key_id, k.cost_micros]));
  } catch (_) {
    return new Map();
  }
}

async function loadKeys() {
  const org = $("#key-filter").value;
  const search = $("#key-search").value.trim();
  let path = "/admin/v1/keys?limit=500&sort=-created_at";
  if (org) path += "&organization_id=" + enc(org);
  if (search) path += "&search=" + enc(search);
  const [keys, spend] = await Promise.all([api("GET", path), spendByKey()]);
  keyNames = new Map(keys.data.map((k) => [k.id, k.name + " (" + k.display_prefix + "…)"]));
  fill($("#key-table tbody"), keys.data, (tr, k) => {
    cell(tr, k.name);
    cell(tr, k.display_prefix + "…");
    cell(tr, orgNames.get(k.organization_id) || k.organization_id);
    cell(tr, k.plan);
    const expired = k.expires_at && Date.parse(k.expires_at) <= Date.now();
    const rotating = k.previous_expires_at && Date.parse(k.previous_expires_at) > Date.now();
    const state = expired ? "expired" : k.status + (rotating ? " (old secret works until " + when(k.previous_expires_at) + ")" : "");
    cell(tr, state).className = k.status === "active" && !expired ? "good" : "bad";
    cell(tr, k.budget_usd === null ? "plan's" : money(k.budget_usd) + (k.budget_period ? " / " + k.budget_period : ""), "num");
    cell(tr, money(micros(spend.get(k.id) || 0)), "num");
    cell(tr, k.expires_at ? when(k.expires_at) : "never");
    cell(tr, when(k.created_at));
    const actions = document.createElement("td");
    if (canWrite() && k.status === "active") {
      actions.appendChild(button("Rotate", "secondary", async () => {
        const grace = prompt("Rotate " + k.name + ": how many minutes may the old secret keep working?", "60");
        if (grace === null) return;
        const minutes = Math.max(0, Number.parseInt(grace, 10) || 0);
        const made = await api("POST", "/admin/v1/keys/" + enc(k.id) + "/regenerate", { grace_seconds: minutes * 60 });
        showSecret("The new secret of " + k.name + ", shown once; the old one works for " + minutes + " more minutes.", made.key);
        await loadKeys();
      }, "Rotate " + k.name));
      actions.appendChild(button("Revoke", "danger", async () => {
        if (!confirm("Revoke key " + k.name + "? It stops working at once.")) return;
        await api("POST", "/admin/v1/keys/" + enc(k.id) + "/revoke");
        status("Revoked " + k.name + ".");
        await loadKeys();
      }, "Revoke " + k.name));
    }
    if (canWrite()) {
      actions.appendChild(button("Delete", "danger", async () => {
        if (!confirm("Delete key " + k.name + "? Its usage stays in the ledger.")) return;
        await api("DELETE", "/admin/v1/keys/" + enc(k.id));
        await loadKeys();
      }, "Delete " + k.name));
    }
    tr.appendChild(actions);
  });
}
$("#key-filter").addEventListener("change", () => guarded(loadKeys));
$("#key-search").addEventListener("input", () => guarded(loadKeys));

$("#key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    const body = { organization_id: f.organization_id.value, plan: f.plan.value || undefined, name: optional(f, "name") };
    const models = list(f.models.value);
    if (models.length) body.models = models;
    const budget = optional(f, "budget_usd");
    if (budget !== undefined) body.budget_usd = Number.parseFloat(budget);
    if (f.budget_period.value) body.budget_period = f.budget_period.value;
    for (const n of ["daily_prompt_quota", "monthly_prompt_quota", "rpm_limit", "tpm_limit"]) {
      const v = optionalInt(f, n);
      if (v !== undefined) body[n] = v;
    }
    if (f.expires.value) body.expires_at = f.expires.value + "T00:00:00Z";
    const created = await api("POST", "/admin/v1/keys", body);
    showSecret("The new key " + created.name + ", shown once: copy it now.", created.key);
    f.reset();
    await loadKeys();
  });
});

// --- plans ---

let plansByName = new Map();
const PLAN_FIELDS = ["public_alias", "daily_prompt_quota", "monthly_prompt_quota", "monthly_token_allowance", "rpm_limit", "tpm_limit", "max_parallel", "budget_usd"];

function planValue(p, field) {
  return field === "budget_usd" ? micros(p.budget_micros) : p[field];
}

async function loadPlans() {
  const plans = await api("GET", "/admin/v1/plans");
  plansByName = new Map(plans.data.map((p) => [p.name, p]));
  for (const sel of $$(".plan-select")) {
    sel.replaceChildren();
    // A new key gets the default plan unless another is chosen (also after the form is reset): it is the
    // one every principal may give, whatever order the plans come in.
    for (const p of plans.data) {
      const isDefault = p.name === DEFAULT_PLAN;
      sel.appendChild(new Option(p.name + (p.public_alias ? " (" + p.public_alias + ")" : ""), p.name, isDefault, isDefault));
    }
  }
  fill($("#plan-table tbody"), plans.data, (tr, p) => {
    cell(tr, p.name);
    cell(tr, p.public_alias);
    for (const f of PLAN_FIELDS.slice(1, 7)) cell(tr, p[f] === null ? "unlimited" : num(p[f]), "num");
    cell(tr, p.budget_micros === null ? "none" : money(micros(p.budget_micros)) + " / " + (p.budget_period || "month"), "num");
    const actions = document.createElement("td");
    if (isAdmin()) {
      actions.appendChild(button("Edit", "secondary", () => editPlan(p), "Edit plan " + p.name));
      actions.appendChild(button("Delete", "danger", async () => {
        if (!confirm("Delete plan " + p.name + "?")) return;
        await api("DELETE", "/admin/v1/plans/" + enc(p.name));
        await loadPlans();
      }, "Delete plan " + p.name));
    }
    tr.appendChild(actions);
  });
}

function editPlan(p) {
  const f = $("#plan-form");
  f.dataset.editing = p.name;
  f.name.value = p.name;
  f.name.readOnly = true;
  for (const field of PLAN_FIELDS) {
    const v = planValue(p, field);
    f[field].value = v === null || v === undefined ? "" : v;
  }
  $("#plan-submit").textContent = "Save plan " + p.name;
  $("#plan-cancel").hidden = false;
  f.daily_prompt_quota.focus();
}
function resetPlanForm() {
  const f = $("#plan-form");
  delete f.dataset.editing;
  f.reset();
  f.name.readOnly = false;
  $("#plan-submit").textContent = "Create plan";
  $("#plan-cancel").hidden = true;
}
$("#plan-cancel").addEventListener("click", resetPlanForm);
$("#plan-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const f = ev.target;
    const read = (field) => {
      const v = f[field].value.trim();
      if (v === "") return null;
      return field === "public_alias" ? v : field === "budget_usd" ? Number.parseFloat(v) : Number.parseInt(v, 10);
    };
    const editing = f.dataset.editing;
    if (editing) {
      // Only what changed is sent: the plan keeps every other field.
      const old = plansByName.get(editing);
      const patch = {};
      for (const field of PLAN_FIELDS) {
        const v = read(field);
        const was = planValue(old, field);
        if (v !== (was === undefined ? null : was)) patch[field] = v;
      }
      await api("PATCH", "/admin/v1/plans/" + enc(editing), patch);
      status("Plan " + editing + " saved.");
    } else {
      const body = { name: f.name.value };
      for (const field of PLAN_FIELDS) {
        const v = read(field);
        if (v !== null) body[field] = v;
      }
      await api("POST", "/admin/v1/plans", body);
      status("Plan created.");
    }
    resetPlanForm();
    await loadPlans();
  });
});

// --- usage ---

function dateRange(form) {
  const day = 86400000;
  const to = form.to.value ? Date.parse(form.to.value + "T00:00:00Z") + day : Date.now() + 1;
  const from = form.from.value ? Date.parse(form.from.value + "T00:00:00Z") : to - 30 * day;
  return { from, to };
}

function usageQuery(form, group) {
  const { from, to } = dateRange(form);
  let q = "/admin/v1/usage?group_by=" + group + "&from=" + from + "&to=" + to;
  for (const n of ["organization_id", "key_id", "model"]) {
    const v = form[n].value.trim();
    if (v) q += "&" + n + "=" + enc(v);
  }
  return q;
}

const SVG = "http://www.w3.org/2000/svg";
function barChart(target, points, format) {
  const el = $(target);
  el.replaceChildren();
  const w = 300, h = 140, pad = 18;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("role", "img");
  const max = Math.max(0, ...points.map((p) => p.value));
  svg.setAttribute("aria-label", points.length ? points.length + " days, highest " + format(max) : "no data");
  if (points.length === 0) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", "10"); t.setAttribute("y", "70");
    t.textContent = "No requests in this range.";
    svg.appendChild(t);
  }
  const bw = Math.min(28, (w - 2 * pad) / Math.max(points.length, 1));
  points.forEach((p, i) => {
    const bh = max > 0 ? ((h - 2 * pad) * p.value) / max : 0;
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", String(pad + i * bw + 1));
    r.setAttribute("y", String(h - pad - bh));
    r.setAttribute("width", String(Math.max(bw - 2, 1)));
    r.setAttribute("height", String(bh));
    const title = document.createElementNS(SVG, "title");
    title.textContent = p.label + ": " + format(p.value);
    r.appendChild(title);
    svg.appendChild(r);
  });
  if (points.length) {
    for (const [x, text, anchor] of [[pad, points[0].label, "start"], [w - pad, points[points.length - 1].label, "end"]]) {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", String(x)); t.setAttribute("y", String(h - 4)); t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      svg.appendChild(t);
    }
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", String(pad)); t.setAttribute("y", "12");
    t.textContent = "max " + format(max);
    svg.appendChild(t);
  }
  el.appendChild(svg);
}

function usageTable(table, rows, label) {
  const totals = { requests: 0, prompt: 0, completion: 0, cost: 0 };
  fill($(table + " tbody"), rows, (tr, r) => {
    cell(tr, label(r.group));
    cell(tr, num(r.requests), "num");
    cell(tr, num(r.prompt_tokens), "num");
    cell(tr, num(r.completion_tokens), "num");
    cell(tr, money(r.cost_usd), "num");
    totals.requests += r.requests; totals.prompt += r.prompt_tokens; totals.completion += r.completion_tokens; totals.cost += r.cost_micros;
  });
  const foot = $(table + " tfoot");
  foot.replaceChildren();
  const tr = document.createElement("tr");
  cell(tr, "Total");
  cell(tr, num(totals.requests), "num");
  cell(tr, num(totals.prompt), "num");
  cell(tr, num(totals.completion), "num");
  cell(tr, money(micros(totals.cost)), "num");
  foot.appendChild(tr);
}

async function loadUsage() {
  const form = $("#usage-form");
  const [days, models, keys] = await Promise.all(["day", "model", "key"].map((g) => api("GET", usageQuery(form, g))));
  const pts = (f) => days.data.map((d) => ({ label: d.group, value: f(d) }));
  barChart("#chart-requests", pts((d) => d.requests), num);
  barChart("#chart-tokens", pts((d) => d.prompt_tokens + d.completion_tokens), num);
  barChart("#chart-spend", pts((d) => d.cost_usd), money);
  usageTable("#usage-model", models.data, (g) => g || "(none)");
  usageTable("#usage-key", keys.data, (g) => keyNames.get(g) || g || "(master key)");
}
$("#usage-form").addEventListener("submit", (ev) => { ev.preventDefault(); guarded(loadUsage); });

// --- request log ---

async function loadEvents() {
  const f = $("#requests-form");
  let q = "/admin/v1/usage/requests?limit=" + PAGE + "&offset=" + eventsOffset;
  for (const n of ["request_id", "organization_id", "model"]) {
    const v = f[n].value.trim();
    if (v) q += "&" + n + "=" + enc(v);
  }
  const events = await api("GET", q);
  fill($("#events-table tbody"), events.data, (tr, e) => {
    cell(tr, when(e.created_at));
    cell(tr, e.request_id).className = "muted";
    cell(tr, e.key_id ? keyNames.get(e.key_id) || e.key_id : "master key");
    cell(tr, e.requested_model);
    cell(tr, e.served_model ? e.served_model + " via " + e.provider : null);
    cell(tr, e.outcome).className = e.outcome === "completed" ? "" : "bad";
    cell(tr, e.status, "num");
    cell(tr, num(e.prompt_tokens) + " / " + num(e.completion_tokens), "num");
    // A failed request costs nothing; an unpriced one is unknown, not free.
    cell(tr, e.outcome !== "completed" && !e.cost_micros ? "—" : money(micros(e.cost_micros)), "num");
    cell(tr, e.latency_ms === null || e.latency_ms === undefined ? null : num(e.latency_ms) + " ms", "num");
  });
  $("#events-page").textContent = events.data.length
    ? "rows " + (eventsOffset + 1) + "–" + (eventsOffset + events.data.length) : "no rows here";
  $("#events-prev").disabled = eventsOffset === 0;
  $("#events-next").disabled = events.data.length < PAGE;
}
$("#requests-form").addEventListener("submit", (ev) => { ev.preventDefault(); eventsOffset = 0; guarded(loadEvents); });
$("#events-prev").addEventListener("click", () => { eventsOffset = Math.max(0, eventsOffset - PAGE); guarded(loadEvents); });
$("#events-next").addEventListener("click", () => { eventsOffset += PAGE; guarded(loadEvents); });

// --- billing ---

let lastBill = null;
async function loadBilling() {
  const f = $("#billing-form");
  let q = "/admin/v1/billing?";
  if (f.month.value) q += "month=" + enc(f.month.value) + "&";
  if (f.organization_id.value) q += "organization_id=" + enc(f.organization_id.value);
  const bill = await api("GET", q);
  lastBill = bill;
  if (!f.month.value) f.month.value = bill.month;
  fill($("#billing-orgs tbody"), bill.organizations, (tr, o) => {
    cell(tr, orgNames.get(o.organization_id) || o.organization_id);
    cell(tr, num(o.tokens), "num");
    cell(tr, money(o.cost_usd), "num");
    cell(tr, num(o.overage_tokens), "num");
    cell(tr, money(o.overage_usd), "num");
  });
  fill($("#billing-keys tbody"), bill.keys, (tr, k) => {
    cell(tr, keyNames.get(k.key_id) || k.key_id);
    cell(tr, orgNames.get(k.organization_id) || k.organization_id);
    cell(tr, num(k.requests), "num");
    cell(tr, num(k.tokens), "num");
    cell(tr, k.included_tokens === null ? "—" : num(k.included_tokens), "num");
    cell(tr, num(k.overage_tokens), "num");
    cell(tr, money(k.cost_usd), "num");
    cell(tr, money(k.overage_usd), "num");
  });
}
$("#billing-form").addEventListener("submit", (ev) => { ev.preventDefault(); guarded(loadBilling); });

function csvField(v) {
  const s = v === null || v === undefined ? "" : String(v);
  // Quoted, and a leading formula character defused, so a spreadsheet shows it as text.
  const safe = /^[=+\-@\t\r]/.test(s) ? "'" + s : s;
  return '"' + safe.replaceAll('"', '""') + '"';
}
$("#billing-csv").addEventListener("click", () => guarded(async () => {
  if (!lastBill) await loadBilling();
  const rows = [["month", "organization_id", "organization", "key_id", "requests", "tokens", "included_tokens", "overage_tokens", "cost_usd", "overage_usd"]];
  for (const k of lastBill.keys) {
    rows.push([lastBill.month, k.organization_id, orgNames.get(k.organization_id) || "", k.key_id, k.requests, k.tokens,
      k.included_tokens, k.overage_tokens, k.cost_usd, k.overage_usd]);
  }
  const blob = new Blob([rows.map((r) => r.map(csvField).join(",")).join("\r\n") + "\r\n"], { type: "text/csv" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "switchyard-billing-" + lastBill.month + ".csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}));

// --- health ---

let health = null;
async function loadHealth() {
  const [p, ready, config] = await Promise.all([
    api("GET", "/admin/v1/providers"),
    fetch("/health/readiness").then((r) => r.json()).catch(() => ({ status: "unreachable" })),
    api("GET", "/admin/v1/config").catch(() => null),
  ]);
  health = p;
  showConfig(config);
  $("#readiness").textContent = "Gateway: " + ready.status + (ready.providers_configured !== undefined
    ? " · " + ready.providers_available + " of " + ready.providers_configured + " providers have their keys" : "");
  fill($("#provider-table tbody"), p.providers, (tr, x) => {
    cell(tr, x.name);
    cell(tr, x.kind + (x.aggregator ? " (aggregator)" : ""));
    cell(tr, x.region || "global");
    cell(tr, x.available ? "configured" : x.unavailable_reason).className = x.available ? "good" : "bad";
  });
  renderBreakers();
}
function renderBreakers() {
  if (!health) return;
  const onlyOpen = $("#breaker-filter").value === "open";
  fill($("#model-table tbody"), health.models.filter((m) => !onlyOpen || m.breaker !== "closed"), (tr, m) => {
    cell(tr, m.name);
    cell(tr, m.provider);
    cell(tr, m.region);
    cell(tr, m.breaker.replace("_", "-")).className = m.breaker === "closed" ? "good" : "bad";
  });
}
$("#breaker-filter").addEventListener("change", renderBreakers);

function showConfig(config) {
  $("#config-version").textContent = config
    ? "Configuration version " + config.version + " (" + config.digest + "), loaded " + when(config.loaded_at) + " from " + config.source
    : "";
}
$("#reload-config").addEventListener("click", () => guarded(async () => {
  const problems = $("#config-problems");
  problems.hidden = true;
  problems.replaceChildren();
  try {
    const config = await api("POST", "/admin/v1/reload");
    showConfig(config);
    status(config.changed ? "Configuration version " + config.version + " is in force." : "The file is unchanged: version " + config.version + " stays.");
    await loadHealth();
  } catch (e) {
    if (e.status !== 422 || !e.body) throw e;
    status(e.message, true);
    for (const p of e.body.error.problems || []) {
      const li = document.createElement("li");
      li.textContent = p.path + ": " + p.message;
      problems.appendChild(li);
    }
    problems.hidden = problems.childElementCount === 0;
  }
}));

// --- audit ---

async function loadAudit() {
  const rows = await api("GET", "/admin/v1/audit?limit=200");
  fill($("#audit-table tbody"), rows.data, (tr, r) => {
    cell(tr, when(r.at));
    cell(tr, r.actor);
    cell(tr, r.action);
    cell(tr, r.target_type + " " + r.target_id);
  });
}

// --- API reference ---

let reference = null;
async function loadReference() {
  if (reference) return;
  reference = await fetch("/openapi.json").then((r) => r.json());
  const root = $("#reference-list");
  root.replaceChildren();
  for (const [path, ops] of Object.entries(reference.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      if (typeof op !== "object" || !op.summary) continue;
      const d = document.createElement("details");
      d.className = "endpoint";
      const s = document.createElement("summary");
      const m = document.createElement("span");
      m.className = "method";
      m.textContent = method.toUpperCase();
      s.append(m, " ", path, " — ", op.summary);
      d.appendChild(s);
      if (method === "get" && !path.includes("{")) {
        const out = document.createElement("pre");
        const go = button("Try it", "secondary", async () => {
          const key = $("#try-key").value;
          const headers = key ? { Authorization: "Bearer " + key } : {};
          const r = await fetch(path, { headers, credentials: key ? "omit" : "same-origin" });
          const text = await r.text();
          let shown = text;
          try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
          out.textContent = r.status + " " + r.statusText + "\n" + shown.slice(0, 20000);
        }, "Try GET " + path);
        d.append(go, out);
      }
      root.appendChild(d);
    }
  }
}

// A session from before a reload is picked up again (the cookie is the browser's; the CSRF token is asked for).
guarded(async () => {
  try {
    await signedIn();
  } catch (e) {
    showSignIn(e.status === 401 ? "" : e.message);
  }
});
