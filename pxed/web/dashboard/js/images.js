// Images: the list, an image's page (versions, upload with progress,
// download links, builds) and a build's page with its live log.

import { del, enc, get, post, put, request, streamText, upload } from "./api.js";
import { $, announce, bytes, confirmed, fields, html, onAction, onSubmit, show, stateBadge, when } from "./dom.js";

function latest(image) {
  const versions = image.Versions || [];
  return versions.length ? versions[versions.length - 1] : null;
}

function imageRow(i) {
  const last = latest(i);
  return html`<tr>
    <th scope="row"><a href="#/image/${enc(i.UUID)}">${i.Name}</a></th>
    <td class="mono">${i.UUID}</td>
    <td>${i.Type}</td>
    <td class="num">${(i.Versions || []).length}</td>
    <td class="num">${last ? bytes(last.Size) : ""}</td>
    <td class="mono">${last ? last.Sha256 : ""}</td>
  </tr>`;
}

export async function list(main, context) {
  const owner = enc(context.me.Username);
  const found = await get(`/user/${owner}/images`);
  show(main, html`
    <h1>Images</h1>
    <form id="create-image" class="inline" aria-label="Create an image">
      <label>Name <input name="Name" required></label>
      <label>Disk size (MiB) <input name="SizeMiB" type="number" min="1" step="1" placeholder="default"></label>
      <button type="submit">Create image</button>
    </form>
    <table>
      <thead><tr><th scope="col">Name</th><th scope="col">UUID</th><th scope="col">Type</th>
        <th scope="col" class="num">Versions</th><th scope="col" class="num">Latest size</th>
        <th scope="col">Latest sha256</th></tr></thead>
      <tbody id="image-rows">${found.map(imageRow)}</tbody>
    </table>`);
  performance.mark("pxed-rendered-images");
  onSubmit($("#create-image", main), async (form) => {
    const values = fields(form);
    const body = { Name: values.Name };
    if (values.SizeMiB) body.Size = Number(values.SizeMiB) * 1024 * 1024;
    const image = await post(`/user/${owner}/image`, body);
    announce(`Created image ${image.Name}`);
    location.hash = `#/image/${enc(image.UUID)}`;
  });
}

function versionRows(image) {
  const versions = image.Versions || [];
  if (!versions.length) return html`<tr><td colspan="6" class="muted">No versions yet: upload a file or build one.</td></tr>`;
  return versions.slice().reverse().map((v) => html`<tr>
    <th scope="row">${v.Version}</th>
    <td class="num">${bytes(v.Size)}</td>
    <td class="mono">${v.Sha256}</td>
    <td>${when(v.CreatedAt)}</td>
    <td>${v.Origin}</td>
    <td><a href="/image/${enc(image.UUID)}/${v.Version}" download>Download version ${v.Version}</a></td>
  </tr>`);
}

function buildRows(builds) {
  if (!builds.length) return html`<tr><td colspan="5" class="muted">No builds.</td></tr>`;
  return builds.map((b) => html`<tr>
    <th scope="row"><a href="#/build/${b.ID}">Build ${b.ID}</a></th>
    <td>${stateBadge(b.State)}</td><td>${b.Format}</td>
    <td>${when(b.CreatedAt)}</td><td>${b.Message}</td>
  </tr>`);
}

export async function page(main, context, uuid) {
  const path = `/image/${enc(uuid)}`;
  const [image, builds] = await Promise.all([get(path), get(`${path}/builds`).catch(() => [])]);
  show(main, html`
    <h1>${image.Name}</h1>
    <dl class="facts">
      <dt>UUID</dt><dd class="mono">${image.UUID}</dd>
      <dt>Owner</dt><dd>${image.Username}</dd>
      <dt>Type</dt><dd>${image.Type}</dd>
      <dt>Disk size</dt><dd>${bytes(image.Size)}</dd>
    </dl>
    <section aria-labelledby="deploys-h">
      <h2 id="deploys-h">Deploys</h2>
      <form id="deploys" class="inline">
        <label class="check"><input name="CloudInit" type="checkbox"${image.CloudInit ? " checked" : ""}>
          Boots with cloud-init (write a seed with the user's SSH keys)</label>
        <label class="check"><input name="Grow" type="checkbox"${image.Grow ? " checked" : ""}>
          Grow the last partition to the disk</label>
        <button type="submit">Save</button>
      </form>
    </section>
    <section aria-labelledby="versions-h">
      <h2 id="versions-h">Versions</h2>
      <table><thead><tr><th scope="col">Version</th><th scope="col" class="num">Size</th>
        <th scope="col">sha256</th><th scope="col">Created</th><th scope="col">Origin</th>
        <th scope="col">Download</th></tr></thead>
        <tbody id="versions">${versionRows(image)}</tbody></table>
    </section>
    <section aria-labelledby="upload-h">
      <h2 id="upload-h">Upload a version</h2>
      <form id="upload" class="inline">
        <label>File <input name="file" type="file" required></label>
        <label class="check"><input name="replace" type="checkbox"> Replace the latest version</label>
        <button type="submit">Upload</button>
        <span class="progress"><progress id="upload-progress" max="100" value="0"
          aria-label="Upload progress">0 %</progress><span id="upload-percent">0 %</span></span>
      </form>
    </section>
    <section aria-labelledby="build-h">
      <h2 id="build-h">Build from a Dockerfile</h2>
      <form id="build" class="stack">
        <label>Dockerfile <textarea name="dockerfile" required spellcheck="false">FROM scratch
</textarea></label>
        <label>Format <select name="format">
          <option value="disk">disk</option><option value="tar">tar</option><option value="initramfs">initramfs</option>
        </select></label>
        <div><button type="submit">Start build</button></div>
      </form>
      <table><thead><tr><th scope="col">Build</th><th scope="col">State</th><th scope="col">Format</th>
        <th scope="col">Started</th><th scope="col">Message</th></tr></thead>
        <tbody id="builds">${buildRows(builds)}</tbody></table>
    </section>
    <section aria-labelledby="delete-h">
      <h2 id="delete-h">Delete</h2>
      <button type="button" class="danger" data-action="delete">Delete image ${image.Name}</button>
    </section>`);

  const refresh = async () => {
    show($("#versions", main), versionRows(await get(path)));
  };
  onSubmit($("#deploys", main), async (form) => {
    const saved = await put(path, {
      CloudInit: form.elements.CloudInit.checked,
      Grow: form.elements.Grow.checked,
    });
    announce(`Saved: cloud-init ${saved.CloudInit ? "on" : "off"}, grow ${saved.Grow ? "on" : "off"}`);
  });
  onSubmit($("#upload", main), async (form) => {
    const file = form.elements.file.files[0];
    const bar = $("#upload-progress", main);
    const percent = $("#upload-percent", main);
    const headers = form.elements.replace.checked ? { "X-BAAS-NewVersion": "false" } : {};
    announce(`Uploading ${file.name}…`);
    const version = await upload(path, file, headers, (sent, total) => {
      const value = total ? Math.floor((sent * 100) / total) : 100;
      bar.value = value;
      bar.textContent = `${value} %`;
      percent.textContent = `${value} %`;
    });
    announce(`Uploaded ${file.name} as version ${version.Version} (sha256 ${version.Sha256})`);
    await refresh();
  });
  onSubmit($("#build", main), async (form) => {
    const values = new FormData(form);
    const body = new FormData();
    body.append("file", new Blob([values.get("dockerfile")], { type: "text/plain" }), "Dockerfile");
    body.append("format", values.get("format"));
    const build = await request("POST", `${path}/docker`, undefined, {}, body);
    announce(`Build ${build.ID} started`);
    location.hash = `#/build/${build.ID}`;
  });
  onAction(main, {
    delete: async (button) => {
      if (!confirmed(button)) return;
      await del(path);
      announce(`Deleted image ${image.Name}`);
      location.hash = "#/images";
    },
  });
}

export async function buildPage(main, context, id) {
  const build = await get(`/build/${id}`);
  show(main, html`
    <h1>Build ${build.ID}</h1>
    <dl class="facts" id="build-facts"></dl>
    <section aria-labelledby="build-log-h">
      <h2 id="build-log-h">Log</h2>
      <pre class="log" id="build-log" tabindex="0" aria-label="Build log"></pre>
    </section>
    <div class="actions">
      <a href="#/image/${enc(build.Image)}">Back to the image</a>
      <button type="button" class="danger" data-action="cancel" id="cancel-build">Cancel build</button>
    </div>`);
  const facts = (b) => {
    show($("#build-facts", main), html`
      <dt>State</dt><dd id="build-state">${stateBadge(b.State)}</dd>
      <dt>Format</dt><dd>${b.Format}</dd>
      <dt>Version</dt><dd>${b.Version ?? ""}</dd>
      <dt>Message</dt><dd>${b.Message}</dd>
      <dt>Started</dt><dd>${when(b.StartedAt)}</dd>
      <dt>Finished</dt><dd>${when(b.FinishedAt)}</dd>`);
    $("#cancel-build", main).hidden = ["succeeded", "failed", "cancelled"].includes(b.State);
  };
  facts(build);
  onAction(main, {
    cancel: async () => { facts(await del(`/build/${id}`)); },
  });
  const log = $("#build-log", main);
  const reading = new AbortController();
  streamText(`/build/${id}/log`, (text) => {
    if (!text) return;
    log.append(text);
    log.scrollTop = log.scrollHeight;
  }, reading.signal)
    .then(async () => {
      facts(await get(`/build/${id}`));
      announce(`Build ${id} log complete`);
    })
    .catch((err) => { if (err.name !== "AbortError") announce(err.message, { error: true }); });
  return () => reading.abort();
}
