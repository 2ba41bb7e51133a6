// Leases: a calendar of each machine's leases over the next days, reserving
// machines, and releasing a lease (its holder, moderators and admins).

import { del, enc, get, post } from "./api.js";
import { $, announce, confirmed, fields, html, onAction, onSubmit, show, when } from "./dom.js";

const DAYS = 7;
const DAY = 24 * 3600 * 1000;

function midnight(d) {
  const m = new Date(d);
  m.setHours(0, 0, 0, 0);
  return m;
}

function clock(d) {
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// A lease's part of one day: "alice 09:00–17:00" (times cut to the day).
function slot(lease, dayStart) {
  const dayEnd = new Date(dayStart.getTime() + DAY);
  const from = new Date(Math.max(new Date(lease.Start), dayStart));
  const to = new Date(Math.min(new Date(lease.End), dayEnd));
  const until = to.getTime() === dayEnd.getTime() ? "24:00" : clock(to);
  return `${lease.User} ${clock(from)}–${until}`;
}

function calendar(machines, leases, first) {
  const days = [...Array(DAYS).keys()].map((i) => new Date(first.getTime() + i * DAY));
  const live = leases.filter((l) => l.State !== "ended");
  return html`<table id="calendar">
    <caption>Leases over the next ${DAYS} days</caption>
    <thead><tr><th scope="col">Machine</th>${days.map((d) => html`<th scope="col">${d.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" })}</th>`)}</tr></thead>
    <tbody>${machines.map((m) => html`<tr data-machine="${m.Name}">
      <th scope="row">${m.Name}</th>
      ${days.map((d) => {
        const here = live.filter((l) => l.Machine === m.Name
          && new Date(l.Start) < new Date(d.getTime() + DAY) && new Date(l.End) > d);
        return html`<td>${here.length ? html`<ul class="slots">${here.map((l) => html`<li>${slot(l, d)}</li>`)}</ul>` : html`<span class="muted">free</span>`}</td>`;
      })}
    </tr>`)}</tbody>
  </table>`;
}

function leaseRows(leases, me) {
  const mine = leases.filter((l) => l.State !== "ended");
  if (!mine.length) return html`<tr><td colspan="6" class="muted">No leases from now on.</td></tr>`;
  const staff = me.Role === "admin" || me.Role === "moderator";
  return mine.map((l) => html`<tr>
    <th scope="row">${l.ID}</th><td>${l.Machine}</td><td>${l.User}</td>
    <td>${when(l.Start)}</td><td>${when(l.End)}</td>
    <td>${l.User === me.Username || staff ? html`<button type="button" class="danger"
      data-action="release" data-id="${l.ID}">Release lease ${l.ID}</button>` : ""}</td>
  </tr>`);
}

export async function list(main, context) {
  const first = midnight(new Date());
  const window = `since=${enc(first.toISOString())}&until=${enc(new Date(first.getTime() + DAYS * DAY).toISOString())}`;
  const load = () => Promise.all([get("/machines"), get(`/leases?${window}`)]);
  const [machines, leases] = await load();
  show(main, html`
    <h1>Leases</h1>
    <p class="muted">While a lease runs only its holder (and staff) may queue work on the machine.</p>
    <div id="calendar-box">${calendar(machines, leases, first)}</div>
    <section aria-labelledby="reserve-h">
      <h2 id="reserve-h">Reserve</h2>
      <form id="reserve" class="inline">
        <label>Machines <select name="Machines" multiple required size="${Math.min(6, Math.max(2, machines.length))}">
          ${machines.map((m) => html`<option value="${m.Name}">${m.Name}</option>`)}
        </select></label>
        <label>Start (local time) <input name="Start" placeholder="now, or 2026-12-08 09:00" size="22"></label>
        <label>Hours <input name="Hours" type="number" min="0.25" step="0.25" value="8" required></label>
        <button type="submit" ${machines.length ? "" : html`disabled`}>Reserve</button>
      </form>
    </section>
    <section aria-labelledby="list-h">
      <h2 id="list-h">From now on</h2>
      <table><thead><tr><th scope="col">Lease</th><th scope="col">Machine</th><th scope="col">User</th>
        <th scope="col">Start</th><th scope="col">End</th><th scope="col">Actions</th></tr></thead>
        <tbody id="lease-rows">${leaseRows(leases, context.me)}</tbody></table>
    </section>`);

  const refresh = async () => {
    const [m, l] = await load();
    show($("#calendar-box", main), calendar(m, l, first));
    show($("#lease-rows", main), leaseRows(l, context.me));
  };
  onSubmit($("#reserve", main), async (form) => {
    const values = fields(form);
    const body = {
      Machines: [...form.elements.Machines.selectedOptions].map((o) => o.value),
      Hours: Number(values.Hours),
    };
    if (values.Start && values.Start.toLowerCase() !== "now") {
      const start = new Date(values.Start.replace(" ", "T"));
      if (Number.isNaN(start.getTime())) throw new Error(`Start: not a time: ${values.Start}`);
      body.Start = start.toISOString();
    }
    const made = await post("/leases", body);
    announce(`Reserved ${made.map((l) => l.Machine).join(", ")} until ${when(made[0].End)}`);
    await refresh();
  });
  onAction(main, {
    release: async (button) => {
      if (!confirmed(button)) return;
      await del(`/lease/${button.dataset.id}`);
      announce(`Released lease ${button.dataset.id}`);
      await refresh();
    },
  });
}
