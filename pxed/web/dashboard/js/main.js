// The dashboard: sign-in, the navigation and the hash routes.  Each page
// module renders into <main> and may give back a function that stops what
// it started (a live stream, a log being read).

import { ApiError, get, onSignedOut, signIn, signOut } from "./api.js";
import { $, announce, fail, html, onSubmit, show } from "./dom.js";
import * as machines from "./machines.js";
import * as images from "./images.js";
import * as leases from "./leases.js";
import * as setups from "./setups.js";
import * as users from "./users.js";

const ROUTES = [
  [/^machines$/, machines.list],
  [/^machine\/([^/]+)$/, machines.page],
  [/^images$/, images.list],
  [/^image\/([^/]+)$/, images.page],
  [/^build\/(\d+)$/, images.buildPage],
  [/^leases$/, leases.list],
  [/^setups$/, setups.list],
  [/^setup\/([^/]+)$/, setups.page],
  [/^users$/, users.list],
  [/^user\/([^/]+)$/, users.page],
];

const context = { me: null };
let stop = null;
let generation = 0; // the newest route; an older one still loading is dropped

function signInPage(main) {
  show(main, html`
    <section class="signin">
      <h1>Sign in to pxed</h1>
      <form id="signin" class="stack">
        <label>API token
          <input name="token" type="password" autocomplete="off" required spellcheck="false">
        </label>
        <button type="submit">Sign in</button>
      </form>
      <p class="or">or</p>
      <p><a class="button" href="/user/login/github?redirect=/">Sign in with GitHub</a></p>
      <p class="muted">An API token is shown once when it is made
        (<code>pxed-admin create-token NAME</code>, or "My tokens" here).
        It is sent once to start a session and not kept by this page.</p>
    </section>`);
  onSubmit($("#signin", main), async (form) => {
    const input = form.elements.token;
    const token = input.value.trim();
    input.value = "";
    const answer = await signIn(token);
    context.me = answer.User;
    announce(`Signed in as ${context.me.Username}`);
    signedIn();
    if (location.hash === "#/machines" || location.hash === "") route();
    else location.hash = "#/machines";
  });
  $("#signin input", main).focus();
}

function signedIn() {
  const me = context.me;
  $("#nav").hidden = !me;
  $("#sign-out").hidden = !me;
  $("#who").textContent = me ? `${me.Username} (${me.Role})` : "";
  const staff = me && (me.Role === "admin" || me.Role === "moderator");
  document.querySelectorAll("#nav .staff").forEach((li) => { li.hidden = !staff; });
  if (me) $("#my-tokens").href = `#/user/${encodeURIComponent(me.Username)}`;
}

function signedOut() {
  context.me = null;
  signedIn();
  if (stop) { stop(); stop = null; }
  signInPage($("#main"));
}

async function route() {
  if (stop) { stop(); stop = null; }
  const main = $("#main");
  if (!context.me) { signInPage(main); return; }
  const path = location.hash.replace(/^#\/?/, "") || "machines";
  document.querySelectorAll("#nav a").forEach((a) => {
    if (a.getAttribute("href") === `#/${path}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  for (const [pattern, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    // A fresh element per page: the listeners a page adds go with it.
    const page = document.createElement("div");
    show(page, html`<p class="muted">Loading…</p>`);
    main.replaceChildren(page);
    const mine = ++generation;
    try {
      const args = match.slice(1).map(decodeURIComponent);
      const stopper = (await render(page, context, ...args)) || null;
      if (mine !== generation) { if (stopper) stopper(); return; }
      stop = stopper;
      const heading = main.querySelector("h1");
      if (heading) document.title = `${heading.textContent} · pxed`;
    } catch (err) {
      if (mine !== generation) return;
      show(page, html`<h1>Not shown</h1><p>${err.message}</p>`);
      fail(err);
    }
    return;
  }
  show(main, html`<h1>No such page</h1><p><a href="#/machines">Machines</a></p>`);
}

async function start() {
  onSignedOut(signedOut);
  $("#sign-out").addEventListener("click", async () => {
    try { await signOut(); } catch (err) { if (!(err instanceof ApiError)) fail(err); }
    announce("Signed out");
    signedOut();
  });
  window.addEventListener("hashchange", route);
  try {
    context.me = await get("/user/me");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) fail(err);
    context.me = null;
  }
  signedIn();
  route();
}

start();
