// Switchyard's admin dashboard: a thin client of the admin API (/admin/v1). Every value from the server is
// put on the page as text (textContent), never as markup.
"use strict";

const KEY_STORE = "switchyard.masterKey";
const $ = (sel) => document.querySelector(sel);
let orgNames = new Map();

function status(message, isError = false) {
  const el = $("#status");
  el.textContent = message || "";
  el.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(KEY_STORE) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (_) { /* empty or not JSON */ }
  if (!resp.ok) {
    const message = (data && data.error && data.error.message) || resp.statusText;
    const err = new Error(message);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "—" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "—";
}

function usd(micros) {
  return micros === null || micros === undefined ? "—" : (micros / 1e6).toFixed(6);
}

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
    if (e.status === 401) {
      signOut("That key was refused: sign in with the master key.");
    } else {
      status(e.message, true);
    }
  }
}

// ---- Organizations

async function loadOrgs() {
  const list = await api("GET", "/admin/v1/organizations?limit=500&sort=name");
  orgNames = new Map(list.data.map((o) => [o.id, o.name]));
  fill($("#org-table tbody"), list.data, (tr, o) => {
    cell(tr, o.name);
    cell(tr, o.id).className = "mono";
    cell(tr, (o.blocked_providers || []).join(", ") || "none");
    cell(tr, o.allow_cheaper_swaps ? "on" : "off");
    cell(tr, o.model_fallbacks === false ? "off" : "on");
    cell(tr, o.stream_continuation === false ? "off" : "on");
    cell(tr, (o.allowed_regions || ["global"]).join(", "));
    cell(tr, when(o.created_at));
    const actions = document.createElement("td");
    actions.appendChild(button(o.allow_cheaper_swaps ? "Turn swaps off" : "Turn swaps on", "secondary", () =>
      guarded(async () => {
        await api("PATCH", "/admin/v1/organizations/" + encodeURIComponent(o.id), { allow_cheaper_swaps: !o.allow_cheaper_swaps });
        await loadOrgs();
      })));
    const fallbacks = o.model_fallbacks !== false;
    actions.appendChild(button(fallbacks ? "Turn fallbacks off" : "Turn fallbacks on", "secondary", () =>
      guarded(async () => {
        await api("PATCH", "/admin/v1/organizations/" + encodeURIComponent(o.id), { model_fallbacks: !fallbacks });
        await loadOrgs();
      })));
    const continuation = o.stream_continuation !== false;
    actions.appendChild(button(continuation ? "Turn continuation off" : "Turn continuation on", "secondary", () =>
      guarded(async () => {
        await api("PATCH", "/admin/v1/organizations/" + encodeURIComponent(o.id), { stream_continuation: !continuation });
        await loadOrgs();
      })));
    tr.appendChild(actions);
  });
  for (const select of [$("#key-form select[name=organization_id]"), $("#key-filter")]) {
    const keep = select.value;
    const first = select.id === "key-filter" ? [["", "all organizations"]] : [];
    select.replaceChildren();
    for (const [id, name] of first.concat([...orgNames.entries()])) {
      const opt = document.createElement("option");
      opt.value = id;
      opt.textContent = name;
      select.appendChild(opt);
    }
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
}

$("#org-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = ev.target;
  guarded(async () => {
    const regions = form.regions.value.split(",").map((r) => r.trim()).filter(Boolean);
    await api("POST", "/admin/v1/organizations", {
      name: form.name.value, allow_cheaper_swaps: form.swaps.checked,
      allowed_regions: regions.length ? regions : ["global"],
    });
    form.reset();
    await loadOrgs();
    status("Organization created.");
  });
});

// ---- Keys

async function loadKeys() {
  const org = $("#key-filter").value;
  const path = "/admin/v1/keys?limit=500" + (org ? "&organization_id=" + encodeURIComponent(org) : "");
  const list = await api("GET", path);
  fill($("#key-table tbody"), list.data, (tr, k) => {
    cell(tr, k.name);
    cell(tr, k.display_prefix);
    cell(tr, orgNames.get(k.organization_id) || k.organization_id);
    cell(tr, k.plan);
    cell(tr, k.status);
    cell(tr, k.models ? k.models.join(", ") : "all");
    cell(tr, when(k.created_at));
    const actions = document.createElement("td");
    if (k.status === "active") {
      actions.appendChild(button("Revoke", "danger", () => guarded(async () => {
        if (!confirm("Revoke key " + (k.name || k.display_prefix) + "? It stops working at once.")) return;
        await api("POST", "/admin/v1/keys/" + encodeURIComponent(k.id) + "/revoke");
        await loadKeys();
        status("Key revoked.");
      })));
    }
    tr.appendChild(actions);
  });
}

async function loadPlanChoices() {
  const plans = await api("GET", "/admin/v1/plans");
  const select = $("#key-form select[name=plan]");
  select.replaceChildren();
  for (const p of plans.data) {
    const opt = document.createElement("option");
    opt.value = p.name;
    opt.textContent = p.name;
    select.appendChild(opt);
  }
  return plans.data;
}

$("#key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = ev.target;
  guarded(async () => {
    const body = { organization_id: form.organization_id.value, plan: form.plan.value || undefined };
    if (form.name.value) body.name = form.name.value;
    const models = form.models.value.split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    if (form.budget_usd.value !== "") body.budget_usd = Number(form.budget_usd.value);
    const created = await api("POST", "/admin/v1/keys", body);
    const box = $("#new-secret");
    box.querySelector("code").textContent = created.key;
    box.hidden = false;
    form.name.value = "";
    form.models.value = "";
    form.budget_usd.value = "";
    await loadKeys();
  });
});

$("#key-filter").addEventListener("change", () => guarded(loadKeys));

// ---- Plans

async function loadPlans() {
  const plans = await loadPlanChoices();
  fill($("#plan-table tbody"), plans, (tr, p) => {
    cell(tr, p.name);
    cell(tr, p.public_alias);
    for (const v of [p.daily_prompt_quota, p.monthly_prompt_quota, p.monthly_token_allowance, p.rpm_limit, p.tpm_limit, p.max_parallel]) {
      cell(tr, v === null || v === undefined ? "unlimited" : v, "num");
    }
    cell(tr, p.budget_micros === null || p.budget_micros === undefined ? "none" : "$" + (p.budget_micros / 1e6).toFixed(2) + " / " + (p.budget_period || "month"));
  });
}

// ---- Usage

async function loadUsage() {
  const group = $("#usage-group").value;
  const summary = await api("GET", "/admin/v1/usage?group_by=" + encodeURIComponent(group));
  const totals = { requests: 0, prompt: 0, completion: 0, cost: 0 };
  fill($("#usage-table tbody"), summary.data, (tr, r) => {
    cell(tr, r.group);
    cell(tr, r.requests, "num");
    cell(tr, r.prompt_tokens, "num");
    cell(tr, r.completion_tokens, "num");
    cell(tr, usd(r.cost_micros), "num");
    totals.requests += r.requests;
    totals.prompt += r.prompt_tokens;
    totals.completion += r.completion_tokens;
    totals.cost += r.cost_micros;
  });
  const foot = $("#usage-table tfoot");
  foot.replaceChildren();
  const tr = document.createElement("tr");
  cell(tr, "Total");
  cell(tr, totals.requests, "num");
  cell(tr, totals.prompt, "num");
  cell(tr, totals.completion, "num");
  cell(tr, usd(totals.cost), "num");
  foot.appendChild(tr);

  const events = await api("GET", "/admin/v1/usage/requests?limit=50");
  fill($("#events-table tbody"), events.data, (tr, e) => {
    cell(tr, when(e.created_at));
    cell(tr, e.key_id || "master key");
    cell(tr, e.requested_model);
    cell(tr, e.served_model);
    cell(tr, e.outcome + (e.error ? " (" + e.error + ")" : ""));
    cell(tr, e.status, "num");
    cell(tr, e.prompt_tokens + " / " + e.completion_tokens, "num");
    cell(tr, usd(e.cost_micros), "num");
    cell(tr, e.latency_ms, "num");
  });
}

$("#usage-group").addEventListener("change", () => guarded(loadUsage));

// ---- Navigation and sign-in

const loaders = { orgs: loadOrgs, keys: async () => { await loadOrgs(); await loadPlanChoices(); await loadKeys(); }, plans: loadPlans, usage: loadUsage };

function show(tab) {
  for (const name of Object.keys(loaders)) $("#" + name).hidden = name !== tab;
  for (const b of document.querySelectorAll("#tabs button[data-tab]")) {
    if (b.dataset.tab === tab) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  $("#new-secret").hidden = true;
  guarded(loaders[tab]);
}

function signedIn() {
  $("#login").hidden = true;
  $("#tabs").hidden = false;
  show("orgs");
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  for (const name of Object.keys(loaders)) $("#" + name).hidden = true;
  $("#tabs").hidden = true;
  $("#login").hidden = false;
  status(message || "", Boolean(message));
}

for (const b of document.querySelectorAll("#tabs button[data-tab]")) {
  b.addEventListener("click", () => show(b.dataset.tab));
}
$("#logout").addEventListener("click", () => signOut());

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("#master-key").value.trim());
  $("#master-key").value = "";
  guarded(async () => {
    await api("GET", "/admin/v1/organizations?limit=1");
    signedIn();
  });
});

if (sessionStorage.getItem(KEY_STORE)) signedIn();
