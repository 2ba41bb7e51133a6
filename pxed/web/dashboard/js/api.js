// The one way the dashboard talks to pxed: the public API, authenticated by
// the session cookie; every change carries the CSRF token the pxed-csrf
// cookie holds (double submit).  No token is ever stored by this code.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "pxed-csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

const unauthorised = new EventTarget();

export function onSignedOut(listener) {
  unauthorised.addEventListener("signed-out", listener);
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch (_) {
    // not JSON: the status line says it
  }
  return new ApiError(response.status, message.split("\n")[0]);
}

// body: JSON; raw: anything fetch sends as it is (FormData, a Blob).
export async function request(method, path, body, headers = {}, raw = undefined) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  } else if (raw !== undefined) {
    init.body = raw;
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const err = await errorOf(response);
    if (response.status === 401) unauthorised.dispatchEvent(new Event("signed-out"));
    throw err;
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") ? response.json() : response.text();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const del = (path, body) => request("DELETE", path, body);

// Starts a browser session with an API token: the token goes in this one
// request's header and nowhere else.
export async function signIn(token) {
  const response = await fetch("/user/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export const signOut = () => post("/user/logout");

export const enc = encodeURIComponent;

// Sends a file as the body of a POST with upload progress (fetch has
// none); the browser streams the file from disk.
export function upload(path, file, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { body = xhr.responseText; }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(file.size, file.size);
        resolve(body);
      } else {
        const message = body && typeof body.error === "string" ? body.error : `${xhr.status} ${xhr.statusText}`;
        reject(new ApiError(xhr.status, message));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "the upload failed: the connection was lost"));
    xhr.send(file);
  });
}

// Reads a text answer as it streams (a running build's log), handing each
// chunk to onText as it arrives; resolves when the answer ends.
export async function streamText(path, onText, signal) {
  const response = await fetch(path, { credentials: "same-origin", signal });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  onText(decoder.decode());
}
