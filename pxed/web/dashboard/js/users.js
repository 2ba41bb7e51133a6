// Users (moderators and admins), a user's API tokens and SSH keys.

import { del, enc, get, post, put, request } from "./api.js";
import { $, announce, confirmed, fields, html, onAction, onSubmit, show, when } from "./dom.js";

const ROLES = ["user", "moderator", "admin"];

function userRow(u) {
  const id = `role-${u.Username}`;
  return html`<tr>
    <th scope="row"><a href="#/user/${enc(u.Username)}">${u.Username}</a></th>
    <td>${u.Name}</td><td>${u.Email}</td>
    <td><label class="check" for="${id}"><span class="muted">Role</span></label>
      <select id="${id}" data-user="${u.Username}">
        ${ROLES.map((r) => html`<option value="${r}" ${r === u.Role ? html`selected` : ""}>${r}</option>`)}
      </select>
      <button type="button" class="secondary" data-action="role" data-user="${u.Username}">Set role of ${u.Username}</button></td>
    <td><button type="button" class="danger" data-action="delete" data-user="${u.Username}">Delete ${u.Username}</button></td>
  </tr>`;
}

export async function list(main) {
  const found = await get("/users");
  show(main, html`
    <h1>Users</h1>
    <form id="create-user" class="inline" aria-label="Create a user">
      <label>Username <input name="Username" required autocomplete="off"></label>
      <label>Name <input name="Name"></label>
      <label>E-mail <input name="Email" type="email"></label>
      <label>Role <select name="Role">${ROLES.map((r) => html`<option>${r}</option>`)}</select></label>
      <button type="submit">Create user</button>
    </form>
    <table>
      <thead><tr><th scope="col">Username</th><th scope="col">Name</th><th scope="col">E-mail</th>
        <th scope="col">Role</th><th scope="col">Actions</th></tr></thead>
      <tbody id="user-rows">${found.map(userRow)}</tbody>
    </table>`);
  const reload = async () => show($("#user-rows", main), (await get("/users")).map(userRow));
  onSubmit($("#create-user", main), async (form) => {
    const created = await request("POST", "/user", fields(form));
    form.reset();
    announce(`Created user ${created.Username || fields(form).Username || ""}`.trim());
    await reload();
  });
  onAction(main, {
    role: async (button) => {
      const name = button.dataset.user;
      const role = main.querySelector(`select[data-user="${CSS.escape(name)}"]`).value;
      await put(`/user/${enc(name)}`, { Role: role });
      announce(`${name} is now ${role}`);
    },
    delete: async (button) => {
      if (!confirmed(button)) return;
      await del(`/user/${enc(button.dataset.user)}`);
      announce(`Deleted user ${button.dataset.user}`);
      await reload();
    },
  });
}

function tokenRows(tokens) {
  if (!tokens.length) return html`<tr><td colspan="6" class="muted">No tokens.</td></tr>`;
  return tokens.map((t) => html`<tr>
    <th scope="row">${t.Name || `token ${t.ID}`}</th>
    <td class="mono">${t.Prefix}…</td>
    <td>${when(t.CreatedAt)}</td><td>${when(t.ExpiresAt) || "never"}</td><td>${when(t.LastUsedAt) || "never"}</td>
    <td><button type="button" class="danger" data-action="revoke" data-id="${t.ID}">Revoke ${t.Name || `token ${t.ID}`}</button></td>
  </tr>`);
}

function keyRows(keys) {
  if (!keys.length) return html`<tr><td colspan="5" class="muted">No SSH keys.</td></tr>`;
  return keys.map((k) => html`<tr>
    <th scope="row">${k.Comment || `key ${k.ID}`}</th>
    <td>${k.Type} (${k.Bits} bits)</td>
    <td class="mono">${k.Fingerprint}</td>
    <td>${when(k.CreatedAt)}</td>
    <td><button type="button" class="danger" data-action="remove-key" data-id="${k.ID}">Remove key ${k.Comment || k.ID}</button></td>
  </tr>`);
}

export async function page(main, context, name) {
  const path = `/user/${enc(name)}/tokens`;
  const keysPath = `/user/${enc(name)}/keys`;
  const [tokens, keys] = await Promise.all([get(path), get(keysPath)]);
  show(main, html`
    <h1>Tokens of ${name}</h1>
    <p class="muted">API tokens for pxectl and scripts. A new token is shown once, here.</p>
    <form id="create-token" class="inline" aria-label="Create a token">
      <label>Token name <input name="Name" required autocomplete="off"></label>
      <label>Expires in days <input name="ExpiresInDays" type="number" min="1" max="3650" step="1" placeholder="never"></label>
      <button type="submit">Create token</button>
    </form>
    <div id="new-token" aria-live="polite"></div>
    <table>
      <thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Created</th>
        <th scope="col">Expires</th><th scope="col">Last used</th><th scope="col">Actions</th></tr></thead>
      <tbody id="token-rows">${tokenRows(tokens)}</tbody>
    </table>
    <h2>SSH keys</h2>
    <p class="muted">Written into every machine ${name} deploys with a cloud-init image.</p>
    <form id="add-key" aria-label="Add an SSH key">
      <label>Public key <textarea name="Key" required rows="3" cols="60" spellcheck="false"
        placeholder="ssh-ed25519 AAAA… you@laptop"></textarea></label>
      <button type="submit">Add key</button>
    </form>
    <table>
      <thead><tr><th scope="col">Comment</th><th scope="col">Type</th><th scope="col">Fingerprint</th>
        <th scope="col">Added</th><th scope="col">Actions</th></tr></thead>
      <tbody id="key-rows">${keyRows(keys)}</tbody>
    </table>`);
  const reload = async () => show($("#token-rows", main), tokenRows(await get(path)));
  const reloadKeys = async () => show($("#key-rows", main), keyRows(await get(keysPath)));
  onSubmit($("#add-key", main), async (form) => {
    const added = await post(keysPath, { Key: fields(form).Key });
    form.reset();
    announce(`Added key ${added.Fingerprint}`);
    await reloadKeys();
  });
  onSubmit($("#create-token", main), async (form) => {
    const values = fields(form);
    const body = { Name: values.Name };
    if (values.ExpiresInDays) body.ExpiresInDays = Number(values.ExpiresInDays);
    const created = await post(path, body);
    form.reset();
    // Shown once: it is in this page only until the page is left.
    show($("#new-token", main), html`<div class="secret">
      <p>New token <strong>${created.Name}</strong>, shown once: copy it now.</p>
      <p><code id="token-value">${created.Token}</code></p></div>`);
    announce(`Created token ${created.Name}`);
    await reload();
  });
  onAction(main, {
    revoke: async (button) => {
      if (!confirmed(button)) return;
      await del(`${path}/${button.dataset.id}`);
      announce("Token revoked");
      await reload();
    },
    "remove-key": async (button) => {
      if (!confirmed(button)) return;
      await del(`${keysPath}/${button.dataset.id}`);
      announce("Key removed");
      await reloadKeys();
    },
  });
}
