// Stemcell's fleet page: the shell (login, API calls, errors, routing, small drawing helpers).
// The views are in views.js; they register themselves in `Stemcell.views`.
// The admin token lives in this tab's sessionStorage and travels only in the Authorization header.
"use strict";

const Stemcell = (() => {
  const TOKEN_KEY = "stemcell.adminToken";
  const API = new URL("../", window.location.href); // the page is at <route_prefix>/ui/
  const views = {};
  let current = null; // {name, stop}: the view on screen and how to stop its timers and streams

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // Element builder: text always goes through textContent, never innerHTML.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    el.append(...children);
    return el;
  }

  function unreachable() {
    return new ApiError(0, `Cannot reach the Stemcell server at ${API.origin}: is it running? (retrying on the next refresh)`);
  }

  async function request(path, options = {}) {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${token()}` };
    let answer;
    try {
      answer = await fetch(new URL(path, API), { ...options, headers });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw unreachable();
    }
    if (answer.ok) return answer;
    let detail = answer.statusText;
    try {
      detail = (await answer.json()).detail || detail;
    } catch (_) { /* not JSON: keep the status text */ }
    if (answer.status === 401 || answer.status === 403) {
      throw new ApiError(answer.status, `Wrong token: the server refused it (${answer.status}: ${detail}).`);
    }
    throw new ApiError(answer.status, `${answer.status} from ${path}: ${detail}`);
  }

  const getJson = async (path) => (await request(path)).json();

  // null when the route is absent (404): optional sections show "n/a"
  async function optionalJson(path) {
    try {
      return await getJson(path);
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
  }

  // A JPEG fetched with the header, shown as a blob URL (an <img src> cannot carry the token).
  async function picture(path, alt, cls) {
    const img = h("img", { alt, class: cls || "snapshot" });
    try {
      const blob = await (await request(path)).blob();
      img.src = URL.createObjectURL(blob);
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
      return img;
    } catch (err) {
      if (err.status === 404) return h("div", { class: `${cls || "snapshot"} missing` }, "no picture yet");
      if (err.status === 503) return h("div", { class: `${cls || "snapshot"} missing` }, err.message); // actor away
      throw err;
    }
  }

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function fail(err) {
    if (err && err.name === "AbortError") return;
    showError(err instanceof ApiError ? err.message : `Unexpected error: ${err}`);
    if (err && (err.status === 401 || err.status === 403)) logout(err.message);
  }

  // Server-Sent Events over fetch(): EventSource cannot send the Authorization header.
  // Calls onEvent(kind, data, id) per event; reconnects with Last-Event-ID; returns stop().
  function stream(path, onEvent, onState) {
    const control = new AbortController();
    let lastId = null;
    let stopped = false;
    async function run() {
      while (!stopped) {
        try {
          const headers = lastId === null ? {} : { "Last-Event-ID": lastId };
          const answer = await request(path, { headers, signal: control.signal });
          onState("live");
          const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              const fields = { event: "message", data: "", id: null };
              for (const line of block.split("\n")) {
                if (line.startsWith(":")) continue;
                const colon = line.indexOf(":");
                const key = line.slice(0, colon);
                const val = line.slice(colon + 1).replace(/^ /, "");
                if (key === "data") fields.data += val;
                else if (key in fields) fields[key] = val;
              }
              if (fields.id !== null) lastId = fields.id;
              if (fields.data) onEvent(fields.event, JSON.parse(fields.data), fields.id);
            }
          }
          if (!stopped) onState("reconnecting: the stream ended");
        } catch (err) {
          if (stopped || err.name === "AbortError") return;
          onState(`reconnecting: ${err.message}`);
          if (err.status === 401 || err.status === 403) return fail(err);
        }
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
    run();
    return () => {
      stopped = true;
      control.abort();
    };
  }

  // A line chart of [[x, y], ...] as inline SVG (no library).
  function chart(points, { width = 360, height = 110, label = "", unit = "" } = {}) {
    const box = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
    box.append(svg("title", {}, label));
    if (points.length < 2) {
      box.append(svg("text", { x: 8, y: height / 2 }, points.length ? `${label}: one point so far` : `${label}: n/a`));
      return box;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys) || 1];
    const sx = (x) => 30 + ((x - x0) / (x1 - x0 || 1)) * (width - 40);
    const sy = (y) => height - 16 - ((y - y0) / (y1 - y0 || 1)) * (height - 30);
    box.append(svg("polyline", { points: points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), class: "line" }));
    box.append(svg("text", { x: 2, y: 12 }, `${label} (max ${fmt(y1)}${unit})`));
    return box;
  }

  function fmt(value, digits = 2) {
    if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
    return String(value);
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "n/a";
    const ago = Date.now() / 1000 - seconds;
    const at = new Date(seconds * 1000).toLocaleTimeString();
    return ago >= 0 && ago < 86400 ? `${at} (${Math.round(ago)} s ago)` : at;
  }

  function show() {
    if (current) current.stop();
    current = null;
    const main = document.getElementById("main");
    main.replaceChildren();
    const loggedIn = Boolean(token());
    document.getElementById("login").hidden = loggedIn;
    document.getElementById("nav").hidden = !loggedIn;
    document.getElementById("logout").hidden = !loggedIn;
    if (!loggedIn) return;
    const [name, ...args] = (window.location.hash.replace(/^#\/?/, "") || "cameras").split("/");
    const view = views[name] || views.cameras;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === name);
    const root = h("section", { id: `view-${name}`, class: "view" });
    main.append(root);
    const timers = [];
    const stops = [];
    const ctx = {
      root,
      every(ms, fn) { // run now and every ms while the view is shown; errors go to the banner
        const tick = () => fn().then(() => showError(""), fail);
        tick();
        timers.push(setInterval(tick, ms));
      },
      onStop(fn) { stops.push(fn); },
    };
    current = { stop: () => { timers.forEach(clearInterval); stops.forEach((f) => f()); } };
    view(ctx, ...args.map(decodeURIComponent));
  }

  async function login(event) {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await request("admin/cameras?limit=1");
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err.message);
      return;
    }
    input.value = "";
    showError("");
    show();
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    show();
    if (typeof message === "string") showError(message);
  }

  window.addEventListener("DOMContentLoaded", () => {
    document.getElementById("server").textContent = API.host;
    document.getElementById("login-form").addEventListener("submit", login);
    document.getElementById("logout").addEventListener("click", () => logout(""));
    window.addEventListener("hashchange", show);
    show();
  });

  return { views, h, svg, chart, fmt, when, getJson, optionalJson, picture, stream, showError, fail };
})();
