// The fleet page's views: Cameras, Camera, Events, Plan, Zoo. Each shows what the JSON routes return
// and "n/a" for what this server does not report (learning off, no Planner, no merging).
"use strict";

(() => {
  const { views, h, chart, fmt, when, getJson, optionalJson, picture, stream, fail } = Stemcell;
  const STATES = ["streaming", "push", "reconnecting", "offline", "stopped"];
  const MAX_CARDS = 60; // snapshots fetched per refresh: the grid shows the first cards of the filter
  const enc = encodeURIComponent;

  async function allCameras(state) {
    const cameras = [];
    for (let offset = 0; offset < 10000; offset += 1000) {
      const q = `admin/cameras?limit=1000&offset=${offset}${state ? `&state=${state}` : ""}`;
      const page = await getJson(q);
      cameras.push(...page.cameras);
      if (cameras.length >= page.total || page.cameras.length === 0) break;
    }
    return cameras;
  }

  function appLine(r) {
    const value = r.count !== null && r.count !== undefined ? `count ${r.count}` : r.label ? "yes" : "no";
    return h("li", { class: r.event_active ? "active" : "" }, `${r.app}: ${value} (${fmt(r.score)})`);
  }

  const stateBadge = (state) => h("span", { class: `state state-${state}` }, state);

  // ------------------------------------------------------------------ Cameras
  views.cameras = (ctx) => {
    const filter = h("select", { id: "state-filter", "aria-label": "state" }, h("option", { value: "" }, "every state"),
      STATES.map((s) => h("option", { value: s }, s)));
    const summary = h("p", { id: "fleet-summary" });
    const grid = h("div", { id: "camera-grid", class: "grid" });
    ctx.root.append(h("h2", {}, "Cameras"), h("label", {}, "Show ", filter), summary, grid);
    const refresh = async () => {
      const cameras = await allCameras(filter.value);
      if (cameras.length === 0) {
        summary.textContent = filter.value ? `No camera is ${filter.value}.` : "The fleet is empty: no camera is "
          + "registered yet. Add one with POST /admin/cameras (README, \"Serving cameras over HTTP\").";
        grid.replaceChildren();
        return;
      }
      const counts = {};
      for (const c of cameras) counts[c.state] = (counts[c.state] || 0) + 1;
      summary.textContent = `${cameras.length} cameras: ` + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ")
        + (cameras.length > MAX_CARDS ? ` (the first ${MAX_CARDS} shown)` : "");
      const cards = await Promise.all(cameras.slice(0, MAX_CARDS).map(card));
      grid.replaceChildren(...cards);
    };
    filter.addEventListener("change", () => refresh().catch(fail));
    ctx.every(5000, refresh);
  };

  async function card(c) {
    // a pulled camera whose ingest actor does not answer (503) shows why on its own card, not over the grid
    const latest = await getJson(`cameras/${enc(c.camera_id)}/latest`).catch((err) => {
      if (err.status !== 503) throw err;
      return { snapshot: false, frame_ts: null, results: [], unavailable: err.message };
    });
    const thumb = latest.snapshot
      ? await picture(`cameras/${enc(c.camera_id)}/snapshot?side=240`, `latest frame of ${c.camera_id}`, "thumb")
      : h("div", { class: "thumb missing" }, latest.unavailable || "no frame yet");
    const lastFrame = c.last_frame_at ?? latest.frame_ts;
    return h("a", { class: "camera-card", href: `#/camera/${enc(c.camera_id)}`, "data-camera": c.camera_id },
      thumb,
      h("div", { class: "card-head" }, h("strong", { class: "name" }, c.camera_id), stateBadge(c.state)),
      h("div", {}, `fps in ${fmt(c.fps_in, 1)} / analysed ${fmt(c.fps_analysed, 1)}, drops ${c.frames_dropped}`),
      h("div", {}, `last frame ${when(lastFrame)}`),
      c.last_error ? h("div", { class: "bad" }, c.last_error) : null,
      h("ul", { class: "results" }, latest.results.map(appLine)));
  }

  // ------------------------------------------------------------------ Camera
  views.camera = (ctx, cameraId) => {
    const id = enc(cameraId);
    const latency = []; // [t, p50 ms] sampled while this view is open (the status route reports the current window)
    ctx.root.append(h("h2", {}, `Camera ${cameraId}`));
    const body = h("div", { class: "camera-body" });
    ctx.root.append(body);
    ctx.every(3000, async () => {
      const [status, latest, events, plan] = await Promise.all([getJson(`cameras/${id}/status`),
        getJson(`cameras/${id}/latest`), getJson(`cameras/${id}/events?limit=10`), getJson("admin/plan")]);
      if (status.requests && status.requests.p50_ms !== null && status.requests.p50_ms !== undefined) {
        latency.push([Date.now() / 1000, status.requests.p50_ms]);
        latency.splice(0, Math.max(0, latency.length - 100));
      }
      const planned = ((plan.cameras || {})[cameraId] || {}).apps || {};
      const current = Object.fromEntries(latest.results.map((r) => [r.app, r]));
      const frame = latest.snapshot ? await picture(`cameras/${id}/snapshot?side=640`, `latest frame of ${cameraId}`)
        : h("div", { class: "snapshot missing" }, "no frame analysed yet");
      const learning = status.learning;
      const agreement = learning && learning.history ? learning.history.map((p) => [p.ts, p.agreement]) : [];
      body.replaceChildren(
        h("div", { class: "row" }, boxed(frame, latest.results, latest.source_size || latest.frame_size),
          h("div", {}, h("p", {}, `executor ${status.executor}, stream ${fmt(status.stream_fps)} fps, `
            + `requests ${fmt(status.requests.fps)} /s, p99 ${fmt(status.requests.p99_ms, 1)} ms`),
          chart(latency, { label: "latency p50", unit: " ms" }),
          chart(agreement, { label: learning ? "teacher agreement" : "teacher agreement (learning off)" }))),
        h("h3", {}, "Apps"),
        table(["app", "branchpoint", "fps", "model version", "F1 validation", "F1 live", "now"],
          status.apps.map((a) => {
            const p = planned[a.app] || {};
            const live = p.f1_live === undefined || p.f1_live === null ? "n/a"
              : `${fmt(p.f1_live)}` + (p.f1_live_ci ? ` [${fmt(p.f1_live_ci[0])}, ${fmt(p.f1_live_ci[1])}]` : "");
            const now = current[a.app];
            return [a.app, `${a.branchpoint} ${a.branchpoint_name || ""}`, fmt(a.fps),
              fmt((latest.model_versions || {})[a.app]), fmt(p.f1_validation ?? a.frame_f1), live,
              now ? appLine(now).textContent.replace(`${a.app}: `, "") : "n/a"];
          }), "apps-table"),
        h("h3", {}, "Learning"),
        learning ? table(["enabled", "samples buffered", "version", "agreement now", "agreement v0", "expert",
          "kept back", "last update"], [[fmt(learning.enabled), fmt(learning.samples_buffered), fmt(learning.version),
          fmt(learning.agreement_now), fmt(learning.agreement_v0), fmt(learning.expert), fmt(learning.kept_back),
          when(learning.last_update_at)]]) : h("p", {}, "n/a: continual learning is off for this camera"),
        h("h3", {}, "Recent events"), eventList(events.events, "camera-events"));
    });
  };

  // The snapshot with the detect apps' boxes: pixel coordinates of the frame as the camera sent it
  // (`source_size`; the snapshot is that frame as analysed), or fractions of it when every coordinate is <= 1.
  function boxed(img, results, frameSize) {
    const boxes = results.flatMap((r) => (r.boxes || []).map((b) => ({ ...b, app: r.app })));
    if (!boxes.length || img.tagName !== "IMG") return h("div", { class: "frame" }, img);
    const wrap = h("div", { class: "frame" }, img);
    img.addEventListener("load", () => {
      for (const b of boxes) {
        const [fw, fh] = frameSize || [img.naturalWidth, img.naturalHeight];
        const scale = Math.max(b.x1, b.y1) <= 1 ? [img.width, img.height] : [img.width / fw, img.height / fh];
        const el = h("div", { class: "box", title: `${b.app} ${b.class} ${fmt(b.score)}` }, `${b.class}`);
        el.style.left = `${b.x0 * scale[0]}px`;
        el.style.top = `${b.y0 * scale[1]}px`;
        el.style.width = `${(b.x1 - b.x0) * scale[0]}px`;
        el.style.height = `${(b.y1 - b.y0) * scale[1]}px`;
        wrap.append(el);
      }
    });
    return wrap;
  }

  function table(headers, rows, id) {
    return h("table", { id }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((v) => h("td", {}, v))))));
  }

  // ------------------------------------------------------------------ Events
  function eventRow(e) {
    const peak = e.peak_count !== null && e.peak_count !== undefined ? `count ${e.peak_count}` : `score ${fmt(e.peak_score)}`;
    const row = h("li", { "data-event": e.event_id, "data-camera": e.camera_id, "data-app": e.app,
      class: e.end_ts === null ? "open" : "" },
    h("span", { class: "event-time" }, when(e.start_ts)), ` ${e.camera_id} · ${e.app} · ${peak} · `,
    e.end_ts === null ? h("strong", {}, "ongoing") : `lasted ${fmt(e.end_ts - e.start_ts, 1)} s`);
    if (e.snapshot) {
      row.classList.add("has-snapshot");
      row.append(h("span", { class: "snap-mark" }, " · snapshot ▸"));
      row.addEventListener("click", async () => {
        if (row.querySelector("img, .missing")) return;
        try {
          row.append(await picture(`admin/events/${enc(e.event_id)}/snapshot`, `event ${e.event_id}`, "thumb"));
        } catch (err) {
          fail(err);
        }
      });
    }
    return row;
  }

  const eventList = (events, id) => events.length ? h("ul", { id, class: "events" }, events.map(eventRow))
    : h("p", { id }, "No events yet.");

  views.events = (ctx) => {
    const camera = h("input", { id: "event-camera", placeholder: "camera", size: 14 });
    const app = h("input", { id: "event-app", placeholder: "app", size: 10 });
    const live = h("span", { id: "stream-state" }, "connecting");
    const list = h("ul", { id: "events-list", class: "events" });
    ctx.root.append(h("h2", {}, "Events"), h("p", {}, "Filter: ", camera, " ", app, " · stream ", live),
      h("p", { class: "hint" }, "Click an event with a snapshot to see it."), list);
    const known = new Map(); // event_id -> event (start, then its end)
    const draw = () => {
      const shown = [...known.values()].filter((e) => (!camera.value || e.camera_id === camera.value)
        && (!app.value || e.app === app.value)).sort((a, b) => b.start_ts - a.start_ts).slice(0, 200);
      list.replaceChildren(...shown.map(eventRow));
      if (!shown.length) list.append(h("li", { class: "empty" }, "No events yet: they appear here as they happen."));
    };
    camera.addEventListener("input", draw);
    app.addEventListener("input", draw);
    getJson("admin/events?limit=100").then((answer) => {
      for (const e of answer.events) if (!known.has(e.event_id)) known.set(e.event_id, e);
      draw();
    }, fail);
    ctx.onStop(stream("admin/events:stream", (_kind, e) => {
      known.set(e.event_id, e);
      draw();
    }, (state) => { live.textContent = state; }));
  };

  // ------------------------------------------------------------------ Plan
  const share = (value) => h("span", { class: "share" }, h("span", { class: "bar", style: null }), fmt(value));

  function stemTree(rows) {
    // rows: [camera, app, branchpoint, name]; apps with branchpoint b share the stem's segments up to b
    const byPoint = new Map();
    for (const [cam, app, bp, name] of rows) {
      const key = `${bp}`;
      if (!byPoint.has(key)) byPoint.set(key, { bp, name, branches: [] });
      byPoint.get(key).branches.push(`${app}@${cam}`);
    }
    const points = [...byPoint.values()].sort((a, b) => b.bp - a.bp);
    const shared = (p) => (p.bp > 0 ? `segments 1–${p.bp}${p.name ? ` (up to ${p.name})` : ""} shared`
      : "nothing shared (branches at the input)");
    return h("ul", { class: "tree" }, h("li", {}, "stem", h("ul", {}, points.map((p) => h("li", {},
      `${shared(p)} → branches: ${p.branches.join(", ")}`)))));
  }

  views.plan = (ctx) => {
    ctx.every(5000, async () => {
      const [plan, cameras] = await Promise.all([getJson("admin/plan"), allCameras("")]);
      const planner = plan.planner;
      const roles = planner ? Object.entries(planner.roles || {}) : [];
      const executors = new Map();
      for (const c of cameras) {
        if (!executors.has(c.executor)) executors.set(c.executor, []);
        executors.get(c.executor).push(c);
      }
      const merges = plan.executors || {};
      const roleRows = roles.map(([role, st]) => {
        const merge = st.merge || (merges[role] || merges[st.actor] || {}).merge;
        const cell = share(st.share);
        cell.firstChild.style.width = `${Math.round(100 * Math.min(1, st.share))}px`;
        return [role, st.kind, cell, st.actor, fmt(st.generation), merge ? `${fmt(merge.merged_bytes)} merged / `
          + `${fmt(merge.unmerged_bytes)} not, ${fmt(merge.remerges)} remerges, ${fmt(merge.undone)} undone` : "n/a"];
      });
      ctx.root.replaceChildren(h("h2", {}, `Plan ${plan.version === null ? "(none saved yet)" : `v${plan.version}`}`),
        h("p", {}, planner ? `GPU ${fmt(planner.capacity_gpu)} of ${fmt(planner.total_gpu)} plannable, `
          + `${fmt(planner.rounds)} rounds, teacher share ${fmt(planner.teacher && planner.teacher.share)}`
          : "n/a: no Planner runs (stemcell planner); shares are the executors' configured ones."),
        h("h3", {}, "GPU shares per role"),
        roleRows.length ? table(["role", "kind", "GPU share", "actor", "generation", "memory merged vs not"], roleRows,
          "roles-table") : h("p", { id: "roles-table" }, "n/a"),
        h("h3", {}, "Executors"),
        ...[...executors.entries()].sort().map(([name, cams]) => {
          const rows = cams.flatMap((c) => c.apps.map((a) => {
            const p = (((plan.cameras || {})[c.camera_id] || {}).apps || {})[a.app] || {};
            return [c.camera_id, a.app, a.branchpoint, p.branchpoint_name || "", p, a.fps];
          }));
          return h("div", { class: "executor", "data-executor": name }, h("h4", {}, `${name}: ${cams.length} cameras`),
            stemTree(rows),
            table(["camera", "app", "branchpoint", "fps", "F1 validation", "F1 live", "event F1 (model)"],
              rows.map(([cam, app, bp, bpName, p, fps]) => [cam, app, `${bp} ${bpName}`, fmt(fps),
                fmt(p.f1_validation ?? p.frame_f1), fmt(p.f1_live), fmt(p.predicted_f1)])));
        }));
    });
  };

  // ------------------------------------------------------------------ Zoo
  views.zoo = (ctx) => {
    ctx.every(10000, async () => {
      const zoo = await optionalJson("admin/zoo");
      if (zoo === null) {
        ctx.root.replaceChildren(h("h2", {}, "Zoo"), h("p", { id: "zoo-none" },
          "n/a: this server reports no model zoo (GET /admin/zoo answered 404)."));
        return;
      }
      ctx.root.replaceChildren(h("h2", {}, "Zoo"),
        h("p", {}, `${zoo.experts.length} experts, ${fmt(zoo.admissions)} admissions, ${fmt(zoo.prunings)} prunings`),
        table(["expert", "base", "size", "admitted", "uses", "cameras"], zoo.experts.map((e) => [e.id, fmt(e.base),
          `${fmt(e.size_bytes / 1e6, 1)} MB`, when(e.admitted_at), fmt(e.uses), (e.cameras || []).join(", ")]), "zoo-table"),
        h("h3", {}, "Camera → expert"),
        table(["camera", "expert"], Object.entries(zoo.cameras || {}).sort(), "zoo-cameras"));
    });
  };
})();
