// The admin dashboard: the same figures `hfl annotate export` writes, live.
"use strict";
const $ = (id) => document.getElementById(id);

function table(el, header, rows) {
  const head = HFL.el("tr", {}, ...header.map((h) => HFL.el("th", { text: h })));
  el.replaceChildren(head, ...rows.map((r) => HFL.el("tr", {}, ...r.map((c) => HFL.el("td", { text: HFL.fmt(c) })))));
}

function pct(x) {
  return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%";
}

async function loadProject(pid) {
  const st = await HFL.api("GET", `api/admin/projects/${pid}/stats`);
  const p = st.project;
  $("set-raters").value = p.raters_per_item;
  $("set-quorum").value = p.quorum;
  $("set-lease").value = p.lease_seconds;
  $("set-instruction").checked = p.show_instruction;
  const kv = [
    ["raters per item / quorum", `${p.raters_per_item} / ${p.quorum}`],
    ["labels", st.labels],
    ["items / labelled / complete / kept", `${st.items_total} / ${st.items_labelled} / ${st.items_complete} / ${st.items_kept}`],
    ["kept share of complete items", pct(st.kept_rate_of_complete)],
    ["Fleiss' kappa (expression)", HFL.fmt(st.fleiss_kappa_expression)],
    ["Krippendorff's alpha (expression, nominal)", HFL.fmt(st.krippendorff_alpha_expression_nominal)],
    ["Krippendorff's alpha (intensity, ordinal)", HFL.fmt(st.krippendorff_alpha_intensity_ordinal)],
    ["seconds per item p50 / p95 / p99 (lease)", st.seconds_per_item
      ? `${HFL.fmt(st.seconds_per_item.p50, 1)} / ${HFL.fmt(st.seconds_per_item.p95, 1)} / ${HFL.fmt(st.seconds_per_item.p99, 1)} (${p.lease_seconds} s)`
      : `– (${p.lease_seconds} s)`],
    ["lease", st.lease_warning || "fine"],
    ["kept by expression", Object.entries(st.kept_expressions).map(([k, v]) => `${k} ${v}`).join(", ") || "–"],
  ];
  $("figures").replaceChildren(...kv.map(([k, v]) => HFL.el("tr", {}, HFL.el("th", { text: k }), HFL.el("td", { text: String(v) }))));
  const names = Array.from(new Set([...Object.keys(st.annotators), ...Object.keys(st.gold)])).sort();
  table($("annotators"),
    ["annotator", "labels", "on kept items", "expression agrees", "exact agrees", "median s/item", "gold", "gold expr. acc.", "gold exact acc."],
    names.map((n) => {
      const a = st.annotators[n] || {};
      const g = st.gold[n] || {};
      return [n, a.labels ?? 0, a.on_kept_items ?? 0, pct(a.expression_agreement), pct(a.exact_agreement),
        a.median_seconds === undefined ? "–" : HFL.fmt(a.median_seconds, 1), g.gold_labels ?? 0,
        pct(g.expression_accuracy), pct(g.exact_accuracy)];
    }));
  $("confusion").src = `api/admin/projects/${pid}/confusion.png?t=${Date.now()}`;
  const items = await HFL.api("GET", `api/admin/projects/${pid}/items?limit=100`);
  $("items-total").textContent = `(first ${items.items.length} of ${items.total})`;
  table($("items"), ["id", "key", "kind", "gold", "labels", "votes", "majority", "intensity", "kept"],
    items.items.map((it) => [it.id, it.key, it.kind, it.gold ? "yes" : "", it.n_labels,
      Object.entries(it.votes).map(([k, v]) => `${k} ${v}`).join(", "), it.expression ?? "–", it.intensity ?? "–",
      it.kept ? "yes" : ""]));
}

let ME = null;

async function loadUsers() {
  const users = await HFL.api("GET", "api/admin/users");
  const head = HFL.el("tr", {}, ...["user", "role", "labels", "login", "account"].map((h) => HFL.el("th", { text: h })));
  $("users").replaceChildren(head, ...users.map((u) => {
    const login = u.login_locked ? `locked ${u.login_blocked_s} s` : (u.login_blocked_s ? `delayed ${u.login_blocked_s} s` : "");
    const cell = HFL.el("td", { text: u.active ? "active " : "disabled " });
    if (u.username !== ME.username) {
      const b = HFL.el("button", { type: "button", class: "small", text: u.active ? "disable" : "enable" });
      b.addEventListener("click", async () => {
        await HFL.api("POST", `api/admin/users/${u.id}/active`, { active: !u.active });
        loadUsers();
        loadMembers();
      });
      cell.append(b);
    }
    return HFL.el("tr", {}, HFL.el("td", { text: u.username }), HFL.el("td", { text: u.role }),
      HFL.el("td", { text: String(u.labels) }), HFL.el("td", { text: login }), cell);
  }));
  await loadLockouts();
}

async function loadMembers() {
  const pid = $("project-select").value;
  if (!pid) return;
  const m = await HFL.api("GET", `api/admin/projects/${pid}/members`);
  $("team-size").textContent = `(${m.team_size} active annotators · ${m.raters_per_item} raters per item)`;
  $("team-warning").hidden = m.team_size >= m.raters_per_item;
  $("team-warning").textContent = `Only ${m.team_size} active annotators for ${m.raters_per_item} raters per item: no item can be completed. Add members or lower the raters per item.`;
  const head = HFL.el("tr", {}, ...["annotator", "member", "account"].map((h) => HFL.el("th", { text: h })));
  $("members").replaceChildren(head, ...m.annotators.map((a) => {
    const box = HFL.el("input", { type: "checkbox", "aria-label": `member: ${a.username}` });
    box.checked = a.member;
    box.addEventListener("change", async () => {
      await HFL.api("POST", `api/admin/projects/${pid}/members`, { username: a.username, member: box.checked });
      loadMembers();
    });
    return HFL.el("tr", {}, HFL.el("td", { text: a.username }), HFL.el("td", {}, box),
      HFL.el("td", { text: a.active ? "active" : "disabled" }));
  }));
}

async function loadLockouts() {
  const locks = await HFL.api("GET", "api/admin/lockouts");
  const head = HFL.el("tr", {}, ...["scope", "account / address", "failed logins", "state", ""].map((h) => HFL.el("th", { text: h })));
  $("lockouts").replaceChildren(head, ...locks.map((lk) => {
    const b = HFL.el("button", { type: "button", text: "unlock" });
    b.addEventListener("click", async () => {
      await HFL.api("POST", "api/admin/lockouts/clear", { scope: lk.scope, key: lk.key });
      loadUsers();
    });
    return HFL.el("tr", {}, HFL.el("td", { text: lk.scope }), HFL.el("td", { text: lk.key }),
      HFL.el("td", { text: String(lk.failures) }),
      HFL.el("td", { text: `${lk.locked ? "locked" : "delayed"} ${lk.retry_after_s} s` }), HFL.el("td", {}, b));
  }));
  if (!locks.length) $("lockouts").append(HFL.el("tr", {}, HFL.el("td", { text: "none" })));
}

async function main() {
  const me = await HFL.api("GET", "api/me");
  ME = me;
  HFL.csrf = me.csrf;
  $("who").textContent = me.username;
  $("logout").addEventListener("click", HFL.logout);
  const sel = $("project-select");
  sel.replaceChildren(...me.projects.map((p) => HFL.el("option", { value: String(p.id), text: p.name })));
  sel.addEventListener("change", () => { $("label-link").href = `label?project=${sel.value}`; loadProject(sel.value); loadMembers(); });
  $("adduser").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const u = await HFL.api("POST", "api/admin/users", {
        username: $("new-username").value, password: $("new-password").value, role: $("new-role").value,
        projects: $("new-member").checked && sel.value ? [Number(sel.value)] : [],
      });
      $("adduser-status").textContent = `added ${u.username} (${u.role})`;
      ev.target.reset();
      loadUsers();
    } catch (e) {
      $("adduser-status").textContent = e.message;
    }
  });
  $("settings").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await HFL.api("POST", `api/admin/projects/${sel.value}/settings`, {
        raters_per_item: Number($("set-raters").value), quorum: Number($("set-quorum").value),
        lease_seconds: Number($("set-lease").value), show_instruction: $("set-instruction").checked,
        force: $("set-force").checked,
      });
      $("settings-status").textContent = `saved: ${r.raters_per_item} raters, quorum ${r.quorum}, lease ${r.lease_seconds} s`;
      loadProject(sel.value);
      loadMembers();
    } catch (e) {
      $("settings-status").textContent = e.message;
    }
  });
  await loadUsers();
  if (me.projects.length) {
    sel.value = String(me.projects[0].id);
    $("label-link").href = `label?project=${sel.value}`;
    await loadProject(sel.value);
    await loadMembers();
  }
  document.body.dataset.ready = "1";
}

main().catch((e) => { document.body.prepend(HFL.el("p", { class: "error", text: e.message })); });
