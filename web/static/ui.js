// converge web UI: confirmations, live updates over Server-Sent Events,
// instant list filtering and the on-demand diff. No framework, no build.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // Confirmation: a button with data-confirm asks first, in a dialog.
  const dialog = document.getElementById("confirm");
  let confirmed = null;
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-confirm]");
    if (!btn || !btn.form || confirmed === btn) return;
    ev.preventDefault();
    if (!dialog || !dialog.showModal) {
      if (window.confirm(btn.dataset.confirm)) { confirmed = btn; btn.form.requestSubmit(btn); }
      return;
    }
    document.getElementById("confirm-text").textContent = btn.dataset.confirm;
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
    dialog.addEventListener("close", () => {
      // A live update may have replaced the button while the dialog was
      // open: submit the one on the page now.
      const target = btn.isConnected ? btn : document.getElementById(btn.id);
      if (dialog.returnValue === "ok" && target && target.form) {
        confirmed = target;
        target.form.requestSubmit(target);
      }
      if (refreshAfterDialog) {
        refreshAfterDialog = false;
        refreshApp();
      }
    }, { once: true });
  });

  // List filtering without a reload; the form still works without script.
  const filters = document.getElementById("filters");
  const table = document.getElementById("apps");
  function applyFilters() {
    if (!filters || !table) return;
    const f = new FormData(filters);
    const ns = f.get("namespace"), sync = f.get("sync"), health = f.get("health");
    const q = (f.get("q") || "").toLowerCase().trim();
    let shown = 0;
    for (const tr of table.tBodies[0].rows) {
      const ok = (!ns || tr.dataset.namespace === ns) && (!sync || tr.dataset.sync === sync) &&
        (!health || tr.dataset.health === health) && (!q || tr.dataset.search.includes(q));
      tr.hidden = !ok;
      if (ok) shown++;
    }
    document.getElementById("no-apps").hidden = shown > 0;
  }
  function recount() {
    if (!table) return;
    const n = { all: 0 };
    const bump = (k) => { n[k] = (n[k] || 0) + 1; };
    for (const tr of table.tBodies[0].rows) {
      bump("all"); bump("sync:" + tr.dataset.sync); bump("health:" + tr.dataset.health);
      if (tr.dataset.suspended === "true") bump("suspended");
      if (tr.dataset.pinned === "true") bump("pinned");
    }
    for (const el of document.querySelectorAll("[data-count]")) el.textContent = n[el.dataset.count] || 0;
  }
  if (filters) {
    filters.addEventListener("input", () => {
      applyFilters();
      const params = new URLSearchParams(new FormData(filters));
      for (const [k, v] of [...params]) if (!v) params.delete(k);
      history.replaceState(null, "", params.toString() ? "?" + params : location.pathname);
    });
    filters.addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(); });
  }

  async function fetchHTML(url) {
    const res = await fetch(url, { headers: { "Accept": "text/html", "X-CSRF-Token": csrf() }, credentials: "same-origin" });
    if (res.status === 401) { location.reload(); return null; }
    return { status: res.status, text: await res.text() };
  }
  function parse(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  // One row of the list changed: replace, insert or remove it.
  async function refreshRow(ns, name) {
    const r = await fetchHTML("/rows/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name));
    if (!r) return;
    const id = "app-" + ns + "-" + name;
    const old = document.getElementById(id);
    if (r.status === 404) { if (old) old.remove(); }
    else if (r.status === 200) {
      const row = parse("<table><tbody>" + r.text + "</tbody></table>").querySelector("tr");
      if (!row) return;
      if (old) old.replaceWith(row);
      else {
        const key = ns + "/" + name;
        const body = table.tBodies[0];
        const next = [...body.rows].find((tr) => tr.dataset.app > key);
        body.insertBefore(row, next || null);
      }
    }
    recount();
    applyFilters();
  }

  // The app page: replace its live sections, keeping the diff as it is,
  // the choices made in its forms, and never under an open dialog.
  const appPage = document.querySelector("[data-app-page]");
  let refreshAfterDialog = false;
  async function refreshApp() {
    if (dialog && dialog.open) {
      refreshAfterDialog = true;
      return;
    }
    const [ns, name] = appPage.dataset.appPage.split("/");
    const r = await fetchHTML("/apps/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name) + "/sections" + location.search);
    if (!r || r.status !== 200) return;
    const frag = parse(r.text);
    for (const id of ["summary", "tree", "history", "actions", "events"]) {
      const fresh = frag.getElementById(id), old = document.getElementById(id);
      if (fresh && old) {
        for (const sel of old.querySelectorAll("select[id]")) {
          const now = fresh.querySelector("#" + CSS.escape(sel.id));
          if (now && [...now.options].some((o) => o.value === sel.value)) now.value = sel.value;
        }
        // Keep the objects checked for a selective sync checked.
        const checked = new Set([...old.querySelectorAll("input[type=checkbox][name=resource]:checked")].map((c) => c.value));
        for (const c of fresh.querySelectorAll("input[type=checkbox][name=resource]")) if (checked.has(c.value)) c.checked = true;
        // Keep open <details> open.
        const open = new Set([...old.querySelectorAll("details[open]")].map((d) => d.closest("[data-entry]")?.dataset.entry));
        for (const d of fresh.querySelectorAll("details")) if (open.has(d.closest("[data-entry]")?.dataset.entry)) d.open = true;
        old.replaceWith(fresh);
      }
    }
  }

  // Coalesce bursts: one refresh per target per 50 ms.
  const pending = new Map();
  function soon(key, fn) {
    if (pending.has(key)) return;
    pending.set(key, setTimeout(() => { pending.delete(key); fn(); }, 50));
  }

  // Live updates: one stream per browser through a shared worker where
  // there is one, else one per page.
  function subscribe(onMessage) {
    if (window.SharedWorker) {
      const w = new SharedWorker("/static/live-worker.js", { name: "converge-live" });
      w.port.onmessage = (ev) => onMessage(ev.data);
      w.port.start();
      addEventListener("pagehide", () => w.port.postMessage("close"));
      return;
    }
    const es = new EventSource("/live");
    es.onopen = () => onMessage({ type: "open" });
    es.onerror = () => onMessage({ type: "error" });
    for (const type of ["app", "history", "event", "reload"]) {
      es.addEventListener(type, (ev) => onMessage({ type, data: ev.data }));
    }
  }

  if (document.body.dataset.live === "true" && (table || appPage)) {
    const dot = document.getElementById("live-dot");
    const mine = appPage && appPage.dataset.appPage;
    subscribe((msg) => {
      switch (msg.type) {
        case "open": if (dot) dot.classList.add("on"); return;
        case "error": if (dot) dot.classList.remove("on"); return;
        case "reload": location.reload(); return;
      }
      const c = JSON.parse(msg.data);
      if (appPage) {
        if (c.namespace + "/" + c.name === mine) soon("app", refreshApp);
      } else if (msg.type === "app") {
        soon(c.namespace + "/" + c.name, () => refreshRow(c.namespace, c.name));
      }
    });
  }

  // The diff is computed on request: it fetches and renders the source.
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("#diff-load");
    if (!btn) return;
    const body = document.getElementById("diff-body");
    btn.disabled = true;
    const label = btn.textContent;
    btn.textContent = "Comparing…";
    try {
      const r = await fetchHTML(btn.dataset.url);
      if (r) body.replaceChildren(parse(r.text));
    } catch (e) {
      body.textContent = "The comparison failed: " + e.message;
    } finally {
      btn.disabled = false;
      btn.textContent = label === "Compare now" ? "Compare again" : label;
    }
  });

  // A pod's log followed as it grows; the page keeps its last 5,000 lines.
  const follow = document.getElementById("log-follow");
  if (follow) {
    let ctrl = null;
    follow.addEventListener("click", async () => {
      if (ctrl) { ctrl.abort(); return; }
      const pre = document.getElementById("log-text");
      ctrl = new AbortController();
      follow.textContent = "Stop following";
      follow.setAttribute("aria-pressed", "true");
      pre.hidden = false;
      pre.textContent = "";
      try {
        const res = await fetch(follow.dataset.url, { headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin", signal: ctrl.signal });
        if (res.status === 401) { location.reload(); return; }
        if (!res.ok) {
          pre.textContent = await res.text();
        } else {
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            let text = pre.textContent + dec.decode(value, { stream: true });
            const lines = text.split("\n");
            if (lines.length > 5000) text = lines.slice(lines.length - 5000).join("\n");
            pre.textContent = text;
            pre.scrollTop = pre.scrollHeight;
          }
        }
      } catch (e) {
        if (e.name !== "AbortError") pre.textContent += "\n(the log stopped: " + e.message + ")";
      } finally {
        ctrl = null;
        follow.textContent = "Follow";
        follow.setAttribute("aria-pressed", "false");
      }
    });
  }

  applyFilters();
})();
