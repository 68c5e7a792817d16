// Shared helpers: JSON API calls carrying the CSRF token, tiny DOM builder.
"use strict";
const HFL = {
  csrf: null,
  async api(method, path, body) {
    const opts = { method, headers: {}, credentials: "same-origin" };
    if (HFL.csrf && method !== "GET") opts.headers["X-CSRF-Token"] = HFL.csrf;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(path, opts);
    if (res.status === 401) {
      window.location.href = "login";
      throw new Error("log in first");
    }
    const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
    if (!res.ok) {
      const err = new Error((data && data.detail) || res.statusText);
      err.status = res.status;
      throw err;
    }
    return data;
  },
  el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  },
  async logout() {
    try { await HFL.api("POST", "api/logout"); } finally { window.location.href = "login"; }
  },
  fmt(x, digits = 3) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number" || Number.isInteger(x)) return String(x);
    return x.toFixed(digits);
  },
};
