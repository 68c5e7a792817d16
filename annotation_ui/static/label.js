// The labelling page: keyboard-first (1-7 expression, Q/W/E intensity, Enter submit, X skip, Z undo).
"use strict";
const S = {
  project: null, info: null, item: null, expression: null, intensity: null,
  busy: false, busyWhat: "", renewAt: 0,
};
const $ = (id) => document.getElementById(id);

function say(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + kind;
}

function needsIntensity() {
  return S.expression !== null && S.expression !== "neutral";
}

function renderChoices() {
  for (const b of $("expressions").children) b.classList.toggle("on", b.dataset.value === S.expression);
  for (const b of $("intensities").children) {
    b.classList.toggle("on", b.dataset.value === S.intensity);
    b.disabled = S.expression === "neutral";
  }
  $("submit").disabled = !S.item || S.expression === null || (needsIntensity() && S.intensity === null);
}

function renderProgress(p) {
  if (!p) return;
  $("progress").textContent =
    `you: ${p.labelled} labelled, ${p.skipped} skipped · ${p.available} open for you · ` +
    `project: ${p.complete}/${p.items} items complete`;
}

function renderItem(item) {
  S.item = item;
  // renew the lease once half of it has passed, on the annotator's next key press or click
  S.renewAt = item ? Date.now() + (item.lease_remaining_s * 1000) / 2 : 0;
  S.expression = null;
  S.intensity = null;
  const images = $("images");
  images.replaceChildren();
  $("instruction").textContent = "";
  $("instruction").hidden = true;
  $("done").hidden = item !== null;
  $("stage").dataset.itemId = item ? String(item.id) : "";
  if (item) {
    const roles = item.kind === "pair" ? ["src", "tgt"] : ["image"];
    for (const role of roles) {
      if (!item.media[role]) continue;
      const fig = HFL.el("figure", { class: "face " + role });
      fig.append(HFL.el("img", { src: item.media[role], alt: role === "src" ? "source face" : "face to label" }));
      if (item.kind === "pair") fig.append(HFL.el("figcaption", { text: role === "src" ? "source" : "target — label this one" }));
      images.append(fig);
    }
    // A pair's instruction can bias the label: shown only when the project asks for it.
    if (item.instruction && S.info.show_instruction) {
      $("instruction").textContent = `instruction: ${item.instruction}`;
      $("instruction").hidden = false;
    }
  }
  renderChoices();
}

let retry = null;

function apply(resp, message) {
  renderItem(resp.item);
  renderProgress(resp.progress);
  if (message) say(message, "ok");
  clearTimeout(retry);
  if (resp.item === null && resp.progress && resp.progress.available > 0) {
    // open items exist but others hold their leases right now: ask again shortly
    $("done").textContent = "Every open item is being labelled by someone else right now; checking again…";
    retry = setTimeout(() => call(() => HFL.api("POST", `api/projects/${S.project}/next`)), 10000);
  } else {
    $("done").textContent = "Nothing left in your queue. Thank you!";
  }
}

function refuseWhileBusy(what) {
  // never drop a key silently: say that it was not used, and why
  say(`still ${S.busyWhat}: wait for the next face (${what} was not used)`, "error");
}

async function renewIfDue() {
  if (!S.item || S.busy || Date.now() < S.renewAt) return;
  const id = S.item.id;
  S.renewAt = Date.now() + 30000; // no second renewal while this one runs
  try {
    const r = await HFL.api("POST", `api/projects/${S.project}/items/${id}/renew`);
    if (S.item && S.item.id === id) S.renewAt = Date.now() + (r.lease_remaining_s * 1000) / 2;
  } catch (e) {
    say(e.message, "error");
    if (e.status === 409 && S.item && S.item.id === id) call(() => HFL.api("POST", `api/projects/${S.project}/next`));
  }
}

async function call(fn, message, what = "working") {
  if (S.busy) return refuseWhileBusy("that request");
  S.busy = true;
  S.busyWhat = what;
  document.body.dataset.busy = "1";
  try {
    apply(await fn(), message);
  } catch (e) {
    say(e.message, "error");
    if (e.status === 409) {
      try { apply(await HFL.api("POST", `api/projects/${S.project}/next`)); } catch (e2) { say(e2.message, "error"); }
    }
  } finally {
    S.busy = false;
    delete document.body.dataset.busy;
  }
}

function submit() {
  if (!S.item) return;
  if (S.expression === null) return say("pick an expression first (keys 1–7)", "error");
  if (needsIntensity() && S.intensity === null) return say("pick an intensity (Q, W or E)", "error");
  const id = S.item.id;
  const label = S.expression + (S.intensity && needsIntensity() ? ` (${S.intensity})` : "");
  call(
    () => HFL.api("POST", `api/projects/${S.project}/items/${id}/label`, {
      expression: S.expression,
      intensity: needsIntensity() ? S.intensity : null,
    }),
    `saved #${id}: ${label}`,
    `saving #${id}`,
  );
}

function skip() {
  if (!S.item) return;
  const id = S.item.id;
  call(() => HFL.api("POST", `api/projects/${S.project}/items/${id}/skip`), `skipped #${id}`, `skipping #${id}`);
}

function undo() {
  call(() => HFL.api("POST", `api/projects/${S.project}/undo`), "undone: label it again", "undoing");
}

function onKey(ev) {
  if (ev.target instanceof HTMLSelectElement || ev.altKey || ev.metaKey) return;
  const key = ev.key.toLowerCase();
  const k = S.info.keys;
  const meaningful = k.expression[key] || k.intensity[key] || ["enter", "x", "z", "backspace"].includes(key);
  if (S.busy && meaningful) {
    ev.preventDefault();
    return refuseWhileBusy(`the key ${ev.key}`);
  }
  if (meaningful) renewIfDue();
  if (ev.ctrlKey) {
    if (key === "z") { ev.preventDefault(); undo(); }
    return;
  }
  if (k.expression[key]) {
    S.expression = k.expression[key];
    if (!needsIntensity()) S.intensity = null;
  } else if (k.intensity[key]) {
    if (needsIntensity() || S.expression === null) S.intensity = k.intensity[key];
  } else if (key === "enter") {
    ev.preventDefault();
    return submit();
  } else if (key === "x") {
    return skip();
  } else if (key === "z" || key === "backspace") {
    ev.preventDefault();
    return undo();
  } else if (key === "?") {
    $("guidelines-box").open = !$("guidelines-box").open;
    return;
  } else {
    return;
  }
  ev.preventDefault();
  renderChoices();
}

function buildButtons(info) {
  const exprKeys = Object.entries(info.keys.expression);
  $("expressions").replaceChildren(...exprKeys.map(([key, value]) => {
    const b = HFL.el("button", { type: "button", "data-value": value, tabindex: "-1" }, HFL.el("kbd", { text: key }), " " + value);
    b.addEventListener("click", () => {
      if (S.busy) return refuseWhileBusy("that click");
      S.expression = value; if (!needsIntensity()) S.intensity = null; renderChoices(); renewIfDue();
    });
    return b;
  }));
  const intKeys = Object.entries(info.keys.intensity);
  $("intensities").replaceChildren(...intKeys.map(([key, value]) => {
    const b = HFL.el("button", { type: "button", "data-value": value, tabindex: "-1" }, HFL.el("kbd", { text: key.toUpperCase() }), " " + value);
    b.addEventListener("click", () => {
      if (S.busy) return refuseWhileBusy("that click");
      if (needsIntensity()) { S.intensity = value; renderChoices(); renewIfDue(); }
    });
    return b;
  }));
}

async function main() {
  const me = await HFL.api("GET", "api/me");
  HFL.csrf = me.csrf;
  $("who").textContent = me.username;
  $("admin-link").hidden = me.role !== "admin";
  if (!me.projects.length) { say("no projects yet: ask an admin to import items", "error"); return; }
  const wanted = Number(new URLSearchParams(window.location.search).get("project"));
  S.project = (me.projects.find((p) => p.id === wanted) || me.projects[0]).id;
  const sel = $("project-select");
  sel.replaceChildren(...me.projects.map((p) => HFL.el("option", { value: String(p.id), text: p.name })));
  sel.value = String(S.project);
  sel.hidden = me.projects.length < 2;
  sel.addEventListener("change", () => { window.location.search = `?project=${sel.value}`; });
  S.info = await HFL.api("GET", `api/projects/${S.project}`);
  $("project-name").textContent = S.info.name;
  $("guidelines").textContent = S.info.guidelines;
  buildButtons(S.info);
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("logout").addEventListener("click", HFL.logout);
  document.addEventListener("keydown", onKey);
  apply(await HFL.api("POST", `api/projects/${S.project}/next`));
  document.body.dataset.ready = "1";
}

main().catch((e) => say(e.message, "error"));
