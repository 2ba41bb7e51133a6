// Setups: the list and a setup's page (its images, added and removed).

import { del, enc, get, post } from "./api.js";
import { $, announce, confirmed, fields, html, onAction, onSubmit, show, when } from "./dom.js";

export async function list(main, context) {
  const base = `/user/${enc(context.me.Username)}`;
  const found = await get(`${base}/image_setups`);
  show(main, html`
    <h1>Setups</h1>
    <p class="muted">A setup is the list of images deployed to a machine, in order.</p>
    <form id="create-setup" class="inline" aria-label="Create a setup">
      <label>Name <input name="Name" required></label>
      <button type="submit">Create setup</button>
    </form>
    <table>
      <thead><tr><th scope="col">Name</th><th scope="col">UUID</th><th scope="col">Images</th>
        <th scope="col">Created</th></tr></thead>
      <tbody>${found.length ? found.map((s) => html`<tr>
        <th scope="row"><a href="#/setup/${enc(s.UUID)}">${s.Name}</a></th>
        <td class="mono">${s.UUID}</td>
        <td>${s.Images.map((f) => `${f.Image.Name} v${f.Version.Version}`).join(", ")}</td>
        <td>${when(s.CreatedAt)}</td></tr>`) : html`<tr><td colspan="4" class="muted">No setups yet.</td></tr>`}</tbody>
    </table>`);
  onSubmit($("#create-setup", main), async (form) => {
    const setup = await post(`${base}/image_setup`, fields(form));
    announce(`Created setup ${setup.Name}`);
    location.hash = `#/setup/${enc(setup.UUID)}`;
  });
}

// Root device hints (pxed/agent/hints.py): the disk an entry goes to when
// given, instead of the kernel's name order.
const TEXT_HINTS = ["Serial", "WWN", "Model", "ByPath"];

function hintsText(hints) {
  if (!hints) return html`<span class="muted">next disk</span>`;
  return Object.entries(hints).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(", ");
}

function hintsOf(values) {
  const hints = {};
  for (const key of TEXT_HINTS) if (values[key] !== undefined) hints[key] = values[key];
  for (const key of ["MinSize", "MaxSize"]) {
    if (values[key] !== undefined) hints[key] = Math.round(Number(values[key]) * 1e9);
  }
  if (values.Rotational !== undefined) hints.Rotational = values.Rotational === "yes";
  return Object.keys(hints).length ? hints : null;
}

function entryRows(setup) {
  if (!setup.Images.length) return html`<tr><td colspan="6" class="muted">No images in this setup.</td></tr>`;
  return setup.Images.map((f, i) => html`<tr>
    <td class="num">${i + 1}</td>
    <th scope="row"><a href="#/image/${enc(f.Image.UUID)}">${f.Image.Name}</a></th>
    <td>${f.Version.Version}</td>
    <td>${f.Update ? "yes" : "no"}</td>
    <td>${hintsText(f.DiskHints)}</td>
    <td><button type="button" class="danger" data-action="remove" data-uuid="${f.Image.UUID}">Remove ${f.Image.Name}</button></td>
  </tr>`);
}

export async function page(main, context, uuid) {
  const base = `/user/${enc(context.me.Username)}`;
  const path = `${base}/image_setup/${enc(uuid)}`;
  const [setup, images] = await Promise.all([get(path), get(`${base}/images`)]);
  show(main, html`
    <h1>${setup.Name}</h1>
    <p class="mono">${setup.UUID}</p>
    <table>
      <thead><tr><th scope="col" class="num">#</th><th scope="col">Image</th><th scope="col">Version</th>
        <th scope="col">Update</th><th scope="col">Disk</th><th scope="col">Actions</th></tr></thead>
      <tbody id="entries">${entryRows(setup)}</tbody>
    </table>
    <h2>Add an image</h2>
    <form id="add-image" class="inline">
      <label>Image <select name="UUID" required>
        ${images.map((i) => html`<option value="${i.UUID}">${i.Name} (${(i.Versions || []).length} versions)</option>`)}
      </select></label>
      <label>Version <input name="Version" type="number" min="0" step="1" placeholder="latest"></label>
      <label class="check"><input name="Update" type="checkbox" value="yes"> Capture the disk back (update)</label>
      <fieldset><legend>Which disk (root device hints; all that are given must match one disk)</legend>
        ${TEXT_HINTS.map((k) => html`<label>${k} <input name="${k}" size="16"></label>`)}
        <label>Min size (GB) <input name="MinSize" type="number" min="0" step="any" size="6"></label>
        <label>Max size (GB) <input name="MaxSize" type="number" min="0" step="any" size="6"></label>
        <label>Rotational <select name="Rotational"><option value="">any</option>
          <option value="yes">yes (HDD)</option><option value="no">no (SSD, NVMe)</option></select></label>
      </fieldset>
      <button type="submit" ${images.length ? "" : html`disabled`}>Add image</button>
    </form>
    <h2>Delete</h2>
    <button type="button" class="danger" data-action="delete">Delete setup ${setup.Name}</button>`);
  onSubmit($("#add-image", main), async (form) => {
    const values = fields(form);
    const entry = { UUID: values.UUID, Update: values.Update === "yes" };
    if (values.Version !== undefined) entry.Version = Number(values.Version);
    const hints = hintsOf(values);
    if (hints) entry.DiskHints = hints;
    const updated = await post(`${path}/images`, entry);
    show($("#entries", main), entryRows(updated));
    announce("Added the image to the setup");
  });
  onAction(main, {
    remove: async (button) => {
      const updated = await del(`${path}/images?UUID=${enc(button.dataset.uuid)}`);
      show($("#entries", main), entryRows(updated));
      announce("Removed the image from the setup");
    },
    delete: async (button) => {
      if (!confirmed(button)) return;
      await del(path);
      announce(`Deleted setup ${setup.Name}`);
      location.hash = "#/setups";
    },
  });
}
