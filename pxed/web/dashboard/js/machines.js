// Machines: the list (live: state and progress from the stream) and a
// machine's page (power, hardware, queue, deploy, its log and events).

import { del, enc, get, post, put } from "./api.js";
import { $, announce, fields, html, onAction, onSubmit, show, stateBadge, when } from "./dom.js";
import { follow } from "./live.js";

const macOf = (m) => m.MacAddress.Address;
const DONE = new Set(["completed", "failed", "cancelled"]);
// pxed/erase.py's policies, from erasing nothing to zeroing every block.
const ERASE = ["none", "metadata", "discard", "full"];

function progressCell(p, name) {
  if (!p) return html`<span class="muted">none</span>`;
  const percent = Math.max(0, Math.min(100, Math.round(p.Percent ?? 0)));
  return html`<span class="progress"><progress max="100" value="${percent}"
    aria-label="${`Progress of ${name}`}">${percent} %</progress><span>${percent} %</span></span>`;
}

function workCell(p) {
  if (!p) return "";
  return p.Step && p.Step !== p.State ? `${p.State}: ${p.Step}` : p.State;
}

function row(m) {
  const mac = macOf(m);
  return html`<tr data-mac="${mac}">
    <th scope="row"><a href="#/machine/${enc(mac)}">${m.Name}</a></th>
    <td class="mono">${mac}</td>
    <td>${m.Architecture}</td>
    <td data-cell="state">${stateBadge(m.State)}</td>
    <td data-cell="work">${workCell(m.Progress)}</td>
    <td data-cell="progress">${progressCell(m.Progress, m.Name)}</td>
  </tr>`;
}

export async function list(main) {
  const found = await get("/machines");
  show(main, html`
    <h1>Machines</h1>
    <p class="muted">${found.length} machines; state and progress follow the live stream.</p>
    <table>
      <thead><tr><th scope="col">Name</th><th scope="col">MAC</th><th scope="col">Architecture</th>
        <th scope="col">State</th><th scope="col">Current work</th><th scope="col">Progress</th></tr></thead>
      <tbody id="machine-rows">${found.map(row)}</tbody>
    </table>`);
  performance.mark("pxed-rendered-machines");
  const body = $("#machine-rows", main);
  const rows = new Map();
  for (const tr of body.rows) rows.set(tr.dataset.mac, tr);
  const names = new Map(found.map((m) => [macOf(m), m.Name]));
  const replace = (m) => {
    const mac = macOf(m);
    const tr = rows.get(mac);
    const template = document.createElement("tbody");
    show(template, row(m));
    const fresh = template.firstElementChild;
    if (tr) tr.replaceWith(fresh); else body.append(fresh);
    rows.set(mac, fresh);
    names.set(mac, m.Name);
  };
  return follow({}, {
    event: async (e) => {
      if (!e.MAC) return;
      try { replace(await get(`/machine/${enc(e.MAC)}`)); } catch (_) { /* deleted since */ }
    },
    progress: (p) => {
      const tr = rows.get(p.MAC);
      if (!tr) return;
      show(tr.querySelector('[data-cell="work"]'), workCell(p.Progress));
      show(tr.querySelector('[data-cell="progress"]'), progressCell(p.Progress, names.get(p.MAC)));
    },
  });
}

function summary(m) {
  const power = m.Power || {};
  return html`<dl class="facts">
    <dt>MAC addresses</dt><dd class="mono">${(m.MacAddresses || []).map((a) => a.Mac).join(", ")}</dd>
    <dt>Architecture</dt><dd>${m.Architecture}</dd>
    <dt>State</dt><dd>${stateBadge(m.State)}</dd>
    <dt>Managed</dt><dd>${m.Managed ? "yes" : "no"}</dd>
    <dt>Last seen</dt><dd>${when(m.LastSeen) || "never"}</dd>
    <dt>Power driver</dt><dd>${power.Driver || "none"}</dd>
    <dt>Erase between users</dt><dd>${m.Erase}</dd>
    <dt>Last user</dt><dd>${m.LastUser || "nobody on record"}</dd>
    <dt>Current work</dt><dd>${workCell(m.Progress) || "none"}</dd>
    <dt>Progress</dt><dd>${progressCell(m.Progress, m.Name)}</dd>
  </dl>`;
}

function queueRows(entries) {
  if (!entries.length) return html`<tr><td colspan="6" class="muted">Nothing queued.</td></tr>`;
  return entries.map((w) => html`<tr>
    <th scope="row">${w.ID}</th>
    <td>${w.Name}</td><td>${w.Username}</td>
    <td>${stateBadge(w.State)}${w.Message ? html` <span class="muted">${w.Message}</span>` : ""}</td>
    <td>${when(w.CreatedAt)}</td>
    <td>${DONE.has(w.State) ? "" : html`<button type="button" class="danger" data-action="cancel"
      data-id="${w.ID}">Cancel work ${w.ID}</button>`}</td>
  </tr>`);
}

function logLine(l) {
  return `${when(l.At)} ${l.Level} ${l.Origin ? `[${l.Origin}] ` : ""}${l.Message}\n`;
}

function eventRow(e) {
  return html`<tr><td>${when(e.At)}</td><td>${e.Actor}</td><td>${e.Action}</td>
    <td>${e.Detail}</td><td class="num">${e.Count ?? 1}</td></tr>`;
}

export async function page(main, context, mac) {
  const path = `/machine/${enc(mac)}`;
  const [machine, queue, logs, events, setups] = await Promise.all([
    get(path),
    get(`${path}/boot/queue`),
    get(`${path}/logs`).catch(() => []),
    get(`${path}/events`).catch(() => []),
    get(`/user/${enc(context.me.Username)}/image_setups`).catch(() => []),
  ]);
  const powered = machine.Power && machine.Power.Driver && machine.Power.Driver !== "none";
  const admin = context.me.Role === "admin";
  show(main, html`
    <h1>${machine.Name}</h1>
    <div id="summary">${summary(machine)}</div>
    ${powered ? html`<section aria-labelledby="power-h">
      <h2 id="power-h">Power</h2>
      <p>Power state: <span id="power-state">asking the BMC…</span></p>
      <div class="actions" id="power-actions">
        <button type="button" data-action="power" data-power="on">Power on</button>
        <button type="button" data-action="power" data-power="off">Power off</button>
        <button type="button" data-action="power" data-power="cycle">Power cycle</button>
      </div></section>` : ""}
    <section aria-labelledby="deploy-h">
      <h2 id="deploy-h">Queue a deploy</h2>
      <form id="deploy" class="inline">
        <label>Setup
          <select name="SetupUUID" required>
            ${setups.map((s) => html`<option value="${s.UUID}">${s.Name}</option>`)}
          </select></label>
        <label>Power now
          <select name="Power">
            <option value="">machine default</option>
            <option value="cycle">cycle</option><option value="on">on</option><option value="none">none</option>
          </select></label>
        <label>After the work
          <select name="After">
            <option value="">machine default</option>
            <option value="reboot">reboot</option><option value="poweroff">power off</option><option value="none">none</option>
          </select></label>
        <label>Erase first
          <select name="Erase">
            <option value="">when another user's (the machine's policy)</option>
            ${ERASE.slice(1).map((p) => html`<option value="${p}">${p}, whoever's</option>`)}
          </select></label>
        <label>cloud-init user-data
          <textarea name="UserData" rows="3" placeholder="#cloud-config"></textarea></label>
        <button type="submit" ${setups.length ? "" : html`disabled`}>Queue deploy</button>
      </form>
      ${setups.length ? "" : html`<p class="muted">You have no setups yet: <a href="#/setups">make one</a>.</p>`}
    </section>
    ${admin ? html`<section aria-labelledby="erase-h">
      <h2 id="erase-h">Erasing</h2>
      <p class="muted">When the machine's next work is another user's than its last, its disks are
        erased first: none, metadata (partition tables and signatures), discard (and TRIM every
        block), full (and zero every block).</p>
      <form id="erase-policy" class="inline">
        <label>Policy <select name="Erase">
          ${ERASE.map((p) => html`<option value="${p}" ${p === machine.Erase ? html`selected` : ""}>${p}</option>`)}
        </select></label>
        <button type="submit">Save erase policy</button>
      </form>
      <form id="erase-now" class="inline">
        <label>Erase every disk now <select name="Policy">
          ${ERASE.slice(1).map((p) => html`<option value="${p}">${p}</option>`)}
        </select></label>
        <button type="submit" class="danger">Queue an erase</button>
      </form></section>` : ""}
    <section aria-labelledby="queue-h">
      <h2 id="queue-h">Queue</h2>
      <table><thead><tr><th scope="col">Work</th><th scope="col">Setup</th><th scope="col">Owner</th>
        <th scope="col">State</th><th scope="col">Queued</th><th scope="col">Actions</th></tr></thead>
        <tbody id="queue">${queueRows(queue)}</tbody></table>
    </section>
    <section aria-labelledby="hardware-h">
      <h2 id="hardware-h">Hardware</h2>
      <div id="hardware"><p class="muted">Loading…</p></div>
    </section>
    <section aria-labelledby="log-h">
      <h2 id="log-h">Management OS log</h2>
      <pre class="log" id="log" tabindex="0" aria-label="Management OS log">${logs.slice().reverse().map(logLine).join("")}</pre>
    </section>
    <section aria-labelledby="events-h">
      <h2 id="events-h">Events</h2>
      <table><thead><tr><th scope="col">At</th><th scope="col">Actor</th><th scope="col">Action</th>
        <th scope="col">Detail</th><th scope="col" class="num">Count</th></tr></thead>
        <tbody id="events">${events.map(eventRow)}</tbody></table>
    </section>`);

  const refresh = async () => {
    const [m, q] = await Promise.all([get(path), get(`${path}/boot/queue`)]);
    show($("#summary", main), summary(m));
    show($("#queue", main), queueRows(q));
  };
  const showPower = async () => {
    try {
      const answer = await get(`${path}/power`);
      $("#power-state", main).textContent = answer.State;
    } catch (err) {
      $("#power-state", main).textContent = `unknown (${err.message})`;
    }
  };
  if (powered) showPower();
  get(`${path}/hardware`).then(
    (hw) => show($("#hardware", main), html`<pre class="log" tabindex="0" aria-label="Hardware inventory">${JSON.stringify(hw, null, 2)}</pre>`),
    (err) => show($("#hardware", main), html`<p class="muted">${err.status === 404 ? "No inventory yet." : err.message}</p>`),
  );

  onSubmit($("#deploy", main), async (form) => {
    const work = await post(`${path}/boot`, fields(form));
    announce(`Queued work ${work.ID} (${work.Name})`);
    await refresh();
  });
  if (admin) {
    onSubmit($("#erase-policy", main), async (form) => {
      const saved = await put(path, fields(form));
      announce(`Erase policy: ${saved.Erase}`);
      await refresh();
    });
    onSubmit($("#erase-now", main), async (form) => {
      const work = await post(`${path}/erase`, fields(form));
      announce(`Queued work ${work.ID}: erase (${work.EraseAsked})`);
      await refresh();
    });
  }
  onAction(main, {
    cancel: async (button) => {
      await del(`${path}/boot/queue/${button.dataset.id}`);
      announce(`Cancelled work ${button.dataset.id}`);
      await refresh();
    },
    power: async (button) => {
      const answer = await post(`${path}/power`, { Action: button.dataset.power });
      $("#power-state", main).textContent = answer.State;
      announce(`Power ${button.dataset.power}: ${answer.State}`);
    },
  });

  const seen = new Set(logs.map((l) => l.ID));
  const seenEvents = new Set(events.map((e) => e.ID));
  const log = $("#log", main);
  return follow({ machine: mac }, {
    log: (l) => {
      if (seen.has(l.ID)) return;
      seen.add(l.ID);
      log.append(logLine(l));
      log.scrollTop = log.scrollHeight;
    },
    event: (e) => {
      if (!seenEvents.has(e.ID)) {
        seenEvents.add(e.ID);
        const template = document.createElement("tbody");
        show(template, eventRow(e));
        $("#events", main).prepend(template.firstElementChild);
      }
      refresh().catch(() => {});
    },
    progress: (p) => {
      const dd = main.querySelectorAll("#summary dd");
      if (dd.length >= 10) {
        show(dd[8], workCell(p.Progress) || "none");
        show(dd[9], progressCell(p.Progress, machine.Name));
      }
    },
  });
}
