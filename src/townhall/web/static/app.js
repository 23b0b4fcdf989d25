// townhall web app: router, sign-in on demand, home, Space page and embed, stage over WHIP.
// State comes from the server-rendered page (a JSON block) and then from the edge socket
// only: no polling. Sign-in is asked for when an action needs an identity, never to listen.
import { Player } from "./player.js";

const $main = document.getElementById("main");
const $announce = document.getElementById("announce");
const $banner = document.getElementById("banner");
const $who = document.getElementById("who");

/** A non-executing JSON block the server put in the page, or null. */
function readJson(id) {
  const el = document.getElementById(id);
  if (!el) return null;
  try { return JSON.parse(el.textContent); } catch { return null; }
}
const config = readJson("config") || { open: true, view: "home", public_url: "", reactions: [] };
// The reactions the api takes: one list, in Python (townhall.room.snapshot), put in the page.
const REACTIONS = config.reactions || [];
let embedded = readJson("snapshot");  // the first page's snapshot, used once

// ---------- session ----------
const me = {
  get token() { return localStorage.getItem("townhall.token"); },
  get id() { return localStorage.getItem("townhall.identity"); },
  get name() { return localStorage.getItem("townhall.name"); },
  save(s) {
    localStorage.setItem("townhall.token", s.token);
    localStorage.setItem("townhall.identity", s.identity);
    localStorage.setItem("townhall.name", s.name || s.identity);
    paintWho();
  },
  clear() { ["token", "identity", "name"].forEach((k) => localStorage.removeItem(`townhall.${k}`)); paintWho(); },
};
function paintWho() { $who.textContent = me.token ? `${me.name}` : ""; }

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (me.token) headers.Authorization = `Bearer ${me.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) { const e = new Error((data && (data.detail || data.title)) || `HTTP ${r.status}`); e.status = r.status; throw e; }
  return data;
}

// ---------- helpers ----------
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) el.append(k);
  return el;
}
const initials = (name) => (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
const escAttr = (s) => String(s).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
function announce(text) { $announce.textContent = ""; setTimeout(() => { $announce.textContent = text; }, 30); }
function banner(kind, text) {
  if (!kind) { $banner.hidden = true; $banner.textContent = ""; return; }
  $banner.hidden = false; $banner.textContent = text; $banner.className = `banner ${kind === "error" ? "error" : ""}`;
  $banner.dataset.kind = kind;
}
function showError(err) { banner("error", err.message || String(err)); setTimeout(() => { if ($banner.dataset.kind === "error") banner(null); }, 5000); }
function focusMain() { $main.focus(); }
const siteOrigin = () => (config.public_url || location.origin).replace(/\/$/, "");

// ---------- dialogs ----------
/** A modal built from `kids`; resolves with what `done(value)` was called with (false on Esc). */
function modal(label, build) {
  return new Promise((resolve) => {
    let settled = false;
    const dlg = h("dialog", { class: "card dialog", "aria-label": label });
    const done = (value) => { if (settled) return; settled = true; dlg.close(); dlg.remove(); resolve(value); };
    dlg.addEventListener("close", () => done(false));
    dlg.append(...build(done));
    document.body.append(dlg);
    dlg.showModal();
    (dlg.querySelector("input") || dlg.querySelector("button"))?.focus();
  });
}

/** Ask for a name (open mode) or explain where tokens come from (closed mode). */
function signInPrompt(why) {
  return modal("Sign in", (done) => {
    if (!config.open) {
      return [h("h2", {}, "Sign in"), h("p", {}, why),
        h("p", {}, "On this server, sign-in comes from the app that sent you here: it gives you a link that signs you in. Listening needs no sign-in."),
        h("div", { class: "row" }, h("button", { type: "button", onclick: () => done(false) }, "OK"))];
    }
    const input = h("input", { id: "signin-name", name: "name", required: true, maxlength: "64", autocomplete: "nickname" });
    const err = h("p", { class: "error", role: "alert" });
    return [h("form", { onsubmit: async (e) => {
      e.preventDefault();
      try { me.save(await api("POST", "/sessions", { name: input.value.trim() })); done(true); } catch (x) { err.textContent = x.message; }
    } },
    h("h2", {}, "Sign in"), h("p", {}, why),
    h("label", { for: "signin-name" }, "Display name"),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Sign in"),
      h("button", { type: "button", class: "secondary", onclick: () => done(false) }, "Cancel")), err)];
  });
}

/** Run `action` as a signed-in person, asking for sign-in first when needed. */
async function withIdentity(why, action) {
  if (!me.token && !(await signInPrompt(why))) return;
  await action();
}

// A token handed over in the link (#token=... or ?token=...) signs this browser in only
// once the person confirms who they will be: a link from someone else must not silently
// switch identities (login CSRF). The fragment form never reaches logs or Referer headers.
async function adoptLinkToken() {
  const q = new URLSearchParams(location.search);
  const t = new URLSearchParams(location.hash.slice(1)).get("token") || q.get("token");
  if (!t) return;
  history.replaceState(null, "", location.pathname);
  const r = await fetch("/api/v1/me", { headers: { Authorization: `Bearer ${t}` } }).catch(() => null);
  if (!r || !r.ok) { showError(new Error("That sign-in link is not valid (any more).")); return; }
  const who = await r.json();
  const name = who.name || who.identity;
  const yes = await modal("Sign in from link", (done) => [
    h("h2", {}, "Sign in from a link"),
    h("p", {}, "This link signs you in as ", h("strong", { id: "link-name" }, name), me.token ? ` instead of ${me.name}.` : "."),
    h("div", { class: "row" }, h("button", { type: "button", onclick: () => done(true) }, `Continue as ${name}`),
      h("button", { type: "button", class: "secondary", onclick: () => done(false) }, "No"))]);
  if (yes) me.save({ token: t, identity: who.identity, name });
}

// ---------- router ----------
let page = null;  // current page's cleanup
let routed = 0;
function go(path) { history.pushState(null, "", path); route(); }
window.addEventListener("popstate", () => route());
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (a && a.origin === location.origin) { e.preventDefault(); go(a.pathname); }
});

async function route() {
  page?.(); page = null; banner(null);
  paintWho();
  const first = routed++ === 0;
  const m = location.pathname.match(/^\/(s|embed)\/([a-z0-9]+)\/?$/);
  if (m) return spacePage(m[2], m[1] === "embed", first);
  const c = location.pathname.match(/^\/c\/([a-z0-9]+-[0-9a-f]+)\/?$/);
  if (c) return clipPage(c[1], first);
  if (location.pathname === "/docs") return (await import("./apidocs.js")).render($main);
  return home();
}

// ---------- home ----------
const LIST_EVERY_MS = 30000;  // and never while the tab is hidden

function startCard() {
  if (!me.token) {
    if (!config.open) {
      return h("section", { class: "card" }, h("h2", {}, "Start a Space"),
        h("p", { class: "meta" }, "Hosting needs an account from the app that runs this server; listening needs none."));
    }
    const input = h("input", { id: "name", name: "name", required: true, maxlength: "64", autocomplete: "nickname" });
    return h("form", { class: "card", onsubmit: async (e) => {
      e.preventDefault();
      try { me.save(await api("POST", "/sessions", { name: input.value.trim() })); route(); } catch (err) { showError(err); }
    } },
    h("h2", {}, "Sign in to start a Space"),
    h("label", { for: "name" }, "Display name"),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Sign in")));
  }
  const title = h("input", { id: "title", name: "title", required: true, maxlength: "120" });
  const when = h("input", { id: "when", name: "when", type: "datetime-local" });
  const create = async (scheduled) => {
    if (!title.value.trim()) { title.focus(); return; }
    try {
      const body = { title: title.value.trim() };
      if (scheduled) {
        if (!when.value) { when.focus(); return; }
        body.scheduled_start = new Date(when.value).toISOString().replace(/\.\d+Z$/, "Z");
      }
      let snap = await api("POST", "/spaces", body);
      if (!scheduled) snap = await api("POST", `/spaces/${snap.id}/start`);
      go(`/s/${snap.id}`);
    } catch (err) { showError(err); }
  };
  return h("form", { class: "card", onsubmit: (e) => { e.preventDefault(); create(false); } },
    h("h2", {}, "Start a Space"),
    h("label", { for: "title" }, "Title"),
    h("div", { class: "row" }, title, h("button", { type: "submit" }, "Start now")),
    h("label", { for: "when" }, "Or schedule it for"),
    h("div", { class: "row" }, when, h("button", { type: "button", class: "secondary", onclick: () => create(true) }, "Schedule")));
}

async function home() {
  const live = h("ul", { class: "spaces", "aria-label": "Live Spaces" }, h("li", {}, "Loading…"));
  const sched = h("ul", { class: "spaces", "aria-label": "Scheduled Spaces" });
  $main.replaceChildren(h("h1", {}, "Spaces"), startCard(),
    h("section", { class: "card" }, h("h2", {}, "Live now"), live),
    h("section", { class: "card" }, h("h2", {}, "Scheduled"), sched),
    me.token ? h("p", { class: "meta" }, h("button", { class: "secondary", onclick: () => { me.clear(); route(); } }, "Sign out")) : null);
  focusMain();
  const fill = async () => {
    try {
      // Extra fields (e.g. a paging cursor) are ignored: this shows the first page.
      const [l, s] = await Promise.all([api("GET", "/spaces?state=live"), api("GET", "/spaces?state=scheduled")]);
      const item = (sp) => h("li", {}, h("a", { href: `/s/${sp.id}`, "data-link": true },
        sp.title, h("span", { class: `pill ${sp.state}` }, sp.state === "live" ? "LIVE" : new Date(sp.scheduled_start || sp.created_at * 1000).toLocaleString()),
        h("span", { class: "meta" }, ` · ${sp.host.name}${sp.state === "live" ? ` · ${sp.listeners} listening` : ""}`)));
      live.replaceChildren(...(l.spaces.length ? l.spaces.map(item) : [h("li", { class: "meta" }, "Nothing live right now.")]));
      sched.replaceChildren(...(s.spaces.length ? s.spaces.map(item) : [h("li", { class: "meta" }, "Nothing scheduled.")]));
    } catch (err) { showError(err); }
  };
  await fill();
  // The list is a glance, not a feed: refresh it every 30 s while the tab is visible, and at
  // once when the tab comes back.
  let last = performance.now();
  const tick = () => { if (!document.hidden && performance.now() - last >= LIST_EVERY_MS) { last = performance.now(); fill(); } };
  const t = setInterval(tick, 5000);
  const onVisible = () => { if (!document.hidden && performance.now() - last >= 5000) { last = performance.now(); fill(); } };
  document.addEventListener("visibilitychange", onVisible);
  page = () => { clearInterval(t); document.removeEventListener("visibilitychange", onVisible); };
}

// ---------- WHIP publisher ----------
// ICE consent takes ~30 s to notice a dead stage; the return feed (sent every 20 ms,
// silence included) going quiet shows it in seconds, so the page can reconnect to the
// stage that takes the Space over.
const RETURN_QUIET_MS = 3000;
const CONNECT_GRACE_MS = 7000;  // ICE and DTLS before the first return packet
window.townhallPublisher = { publishes: 0, drops: 0 };  // read by tests and people debugging

class Publisher {
  constructor(space, onEnd) { this.space = space; this.onEnd = onEnd; this.pc = null; this.location = null; this.watch = null; }

  _end(why) {
    if (!this.pc) return;
    clearInterval(this.watch);
    window.townhallPublisher.drops += 1;
    this.onEnd?.(why);
  }

  _watchReturnFeed() {
    let packets = -1, quietSince = performance.now() + CONNECT_GRACE_MS;
    this.watch = setInterval(async () => {
      const pc = this.pc;
      if (!pc) return;
      let got = 0;
      (await pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "audio") got += r.packetsReceived || 0; });
      const now = performance.now();
      if (got !== packets) { packets = got; quietSince = Math.max(now, quietSince); return; }
      if (now - quietSince > RETURN_QUIET_MS) this._end("lost");
    }, 1000);
  }

  async start() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    this.stream = stream;
    // The server's STUN/TURN servers (TURN credentials fresh for each attempt), none if it
    // has none: never the browser's or anyone else's default.
    const ice = await fetch("/api/v1/ice", { headers: { Authorization: `Bearer ${me.token}` } })
      .then((r) => (r.ok ? r.json() : { iceServers: [] }), () => ({ iceServers: [] }));
    const pc = new RTCPeerConnection({ iceServers: ice.iceServers || [] });
    this.pc = pc;
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendrecv", streams: [stream] });
    // The return feed (everyone but me) plays through <audio>: Chromium's echo canceller
    // only hears what goes out through media elements, never Web Audio.
    this.audio = h("audio", { autoplay: true, "aria-label": "Stage return feed" });
    document.body.append(this.audio);
    pc.ontrack = (e) => { this.audio.srcObject = e.streams[0] || new MediaStream([e.track]); this.audio.play().catch(() => {}); };
    pc.onconnectionstatechange = () => { if (["failed", "closed"].includes(pc.connectionState)) this._end(pc.connectionState); };
    await pc.setLocalDescription(await pc.createOffer());
    // Non-trickle WHIP: wait (bounded) for ICE gathering, then send the whole offer.
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, 3000);
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); } });
    });
    const r = await fetch(`/whip/${this.space}`, { method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${me.token}` }, body: pc.localDescription.sdp });
    if (r.status !== 201) {
      this.close();
      const p = await r.json().catch(() => ({}));
      const err = new Error(p.detail || p.title || `could not go live (HTTP ${r.status})`);
      err.status = r.status; err.retryAfter = Number(r.headers.get("Retry-After")) || 1;
      throw err;
    }
    this.location = new URL(r.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    window.townhallPublisher.publishes += 1;
    this._watchReturnFeed();
  }

  setMuted(muted) { this.stream?.getAudioTracks().forEach((t) => { t.enabled = !muted; }); }

  /** Hang up; tellServer=false when the server already ended the session (removed, ended). */
  close(tellServer = true) {
    if (this.location && tellServer) fetch(this.location, { method: "DELETE", headers: { Authorization: `Bearer ${me.token}` } }).catch(() => {});
    this.location = null;
    clearInterval(this.watch);
    this.pc?.close(); this.pc = null;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.audio?.remove();
  }
}

// ---------- Space page (and its embed) ----------
function notFound() {
  $main.replaceChildren(h("h1", {}, "This Space isn't here"),
    h("p", {}, "It may have been private, or the link may be mistyped."),
    h("p", {}, h("a", { href: "/", "data-link": true }, "See what is live")));
  focusMain();
}

const clock = (t) => `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}`;
const CLIP_MAX_S = 60;
const PEAK_LEAD_S = 5;

async function copyText(text, what) {
  try { await navigator.clipboard.writeText(text); announce(`${what} copied`); banner("info", `${what} copied`); setTimeout(() => banner(null), 2000); } catch { showError(new Error("Copy did not work: select the text and copy it.")); }
}

/** Links to a Space's recording and clips: plain for a public Space; for one that needs a
 * token, with a short-lived signed ticket (?t=) minted by the api for the signed-in person. */
function signedLinks(space, snap) {
  const signed = !!(snap.private || snap.signed_in_only) && !!me.token;
  let held = null;
  return {
    signed,
    drop() { held = null; },
    async query() {
      if (!signed) return "";
      if (!held || held.expires_at * 1000 - Date.now() < 30000) held = await api("POST", `/spaces/${space}/recording/ticket`);
      return `?t=${encodeURIComponent(held.ticket)}`;
    },
  };
}

// ---------- a clip's share page ----------
async function clipPage(clip, first) {
  const space = clip.split("-")[0];
  let snap = embedded && embedded.id === space ? embedded : null;
  embedded = null;
  if (!snap && (!first || me.token)) {
    try { snap = await api("GET", `/spaces/${space}`); } catch { snap = null; }
  }
  if (!snap) { notFound(); return; }
  const audio = h("audio", { id: "clip-audio", controls: true, preload: "metadata" });
  const url = `${siteOrigin()}/c/${clip}`;
  $main.replaceChildren(h("h1", {}, `A clip from ${snap.title}`), h("p", { class: "meta" }, `Hosted by ${snap.host.name}`),
    h("section", { class: "card" }, audio),
    h("p", {}, h("a", { href: `/s/${space}`, "data-link": true }, snap.state === "ended" ? "The whole Space" : "Go to the Space")),
    h("div", { class: "row" }, h("input", { id: "clip-share", readonly: true, value: url, "aria-label": "Link to this clip" }),
      h("button", { type: "button", class: "secondary", onclick: () => copyText(url, "Link") }, "Copy link")));
  focusMain();
  try { audio.src = `/clips/${clip}.opus${await signedLinks(space, snap).query()}`; } catch (err) { showError(err); }
}

function shareMenu(id, title) {
  const url = `${siteOrigin()}/s/${id}`;
  const snippet = `<iframe src="${siteOrigin()}/embed/${id}" title="${escAttr(title)} on townhall" width="100%" height="230" style="border:0;max-width:480px" allow="autoplay"></iframe>`;
  const copy = (text, what) => () => copyText(text, what);
  return h("details", { class: "card share", id: "share-menu" },
    h("summary", {}, "Share"),
    h("label", { for: "share-link" }, "Link"),
    h("div", { class: "row" }, h("input", { id: "share-link", readonly: true, value: url }),
      h("button", { type: "button", class: "secondary", onclick: copy(url, "Link") }, "Copy link")),
    h("label", { for: "embed-code" }, "Embed this Space on your site"),
    h("textarea", { id: "embed-code", readonly: true, rows: "3" }, snippet),
    h("div", { class: "row" }, h("button", { type: "button", class: "secondary", onclick: copy(snippet, "Embed code") }, "Copy embed code")));
}

async function spacePage(id, embed, first) {
  let snap = embedded && embedded.id === id ? embedded : null;
  embedded = null;
  // Only a page the server rendered without a snapshot (private or unknown) or an in-app
  // navigation asks the api; with no token, a first page without a snapshot is a 404.
  if (!snap && (!first || me.token)) {
    try { snap = await api("GET", `/spaces/${id}`); } catch { snap = null; }
  }
  if (!snap) { notFound(); return; }
  const view = { snap: null, levels: {}, links: {}, speaking: new Set(), publisher: null, listening: false, going: false };
  const player = new Player(id, {
    onState: (s) => update(s),
    onLevels: (m) => { view.speaking = new Set(m.speaking || []); view.levels = m.levels || {}; view.links = m.links || {}; paintSpeaking(); },
    onStatus: (kind, text) => banner(kind, text),
    // The socket closed with "ended": one fetch for the final snapshot, then nothing.
    onEnded: () => { api("GET", `/spaces/${id}`).then(update, () => {}); },
  }, me.token);

  const $title = h("h1", {});
  const $hostline = h("p", { class: "meta", id: "hostline" });
  const $stage = h("ul", { class: "stage", "aria-label": "Stage" });
  const $count = h("p", { class: "meta", id: "listeners", "aria-label": "Listener count" });
  const $totals = h("p", { class: "totals", id: "totals", "aria-label": "Reaction totals" });
  const $actions = h("div", { class: "row", id: "actions" });
  const $host = h("section", { class: "card", id: "host-controls", "aria-label": "Host controls" });
  const $reacts = h("div", { class: "reactions", role: "group", "aria-label": "Reactions" },
    REACTIONS.map((e) => h("button", { type: "button", "aria-label": `React ${e}`, onclick: () => react(e) }, e)));
  const $endnote = h("p", { class: "ended-note", id: "ended", hidden: true }, "This Space has ended.");
  const $replay = h("section", { class: "card", id: "replay", "aria-label": "Replay", hidden: true });
  if (embed) {
    $main.replaceChildren($title, $hostline,
      h("div", { class: "embed-line" }, $count, h("a", { href: `${siteOrigin()}/s/${id}`, target: "_blank", rel: "noopener" }, "Open in townhall ↗")),
      $endnote, $actions, $reacts, $totals);
  } else {
    $main.replaceChildren($title, $hostline, $endnote, $replay, $count, h("section", { class: "card" }, h("h2", {}, "Stage"), $stage),
      h("section", { class: "card" }, $actions), $host, h("section", { class: "card" }, $reacts, $totals), shareMenu(id, snap.title));
    focusMain();
  }

  const act = async (action, extra = {}) => {
    try { update(await api("POST", `/spaces/${id}/actions`, { action, ...extra })); } catch (err) { showError(err); }
  };
  const react = (emoji) => withIdentity("Sign in to react.", async () => {
    render();
    try { await api("POST", `/spaces/${id}/reactions`, { emoji }); floatUp(emoji); } catch (err) { showError(err); }
  });
  const requestToSpeak = () => withIdentity("Sign in to ask to speak.", async () => { render(); await act("request"); });

  function floatUp(emoji) {
    const el = h("span", { class: "float", "aria-hidden": "true" }, emoji);
    el.style.left = `${10 + Math.random() * 80}%`;  // CSSOM, not an inline style attribute: CSP allows it
    document.body.append(el);
    setTimeout(() => el.remove(), 2600);
  }

  const mine = (s) => (s.stage || []).find((p) => me.id && p.id === me.id);
  const myRole = (s) => mine(s)?.role || "listener";
  const isMod = (s) => ["host", "cohost"].includes(myRole(s));
  async function goLive() {
    if (view.publisher || view.going) return;
    view.going = true; render();
    // A Space the stage has not picked up yet answers 503: wait and retry, saying so.
    for (let attempt = 0; attempt < 12 && mine(view.snap) && view.snap.state === "live"; attempt++) {
      const pub = new Publisher(id, (why) => {
        if (view.publisher !== pub) return;
        // The stage went away (or the path to it): another stage takes the Space over
        // within seconds, at the same /whip URL. Go live again on our own.
        pub.close(false); view.publisher = null;
        banner("reconnecting", `Stage connection ${why} — reconnecting…`); render();
        setTimeout(() => { if (!view.publisher && mine(view.snap) && view.snap.state === "live") goLive(); },
          250 + Math.random() * 750);
      });
      try {
        await pub.start();
        view.publisher = pub;
        pub.setMuted(!!mine(view.snap)?.muted);
        player.mute(true);  // on stage the return feed replaces the broadcast
        banner(null);
        announce("You are live on stage");
        break;
      } catch (err) {
        pub.close();
        if (err.status !== 503) { showError(err); break; }
        const wait = Math.min(5, err.retryAfter) * (0.5 + Math.random());
        banner("reconnecting", `Waiting for the stage — retrying in ${Math.ceil(wait)} s`);
        await new Promise((r) => setTimeout(r, wait * 1000));
      }
    }
    view.going = false; render();
  }
  function stopPublishing(tellServer = true) { view.publisher?.close(tellServer); view.publisher = null; if (view.listening) player.mute(false); }

  async function listen() {
    view.listening = true; render();
    try { await player.enableAudio(); if (!view.publisher) player.mute(false); } catch (err) { showError(err); }
    tellParent();
  }
  async function pause() {
    view.listening = false; render();
    await player.pause();
    tellParent();
  }

  function diffAnnounce(old, s) {
    if (!old) return;
    const ids = (x) => new Map((x.stage || []).map((p) => [p.id, p]));
    const a = ids(old), b = ids(s), said = [];
    for (const [k, p] of b) if (!a.has(k)) said.push(`${p.name} joined the stage`);
    for (const [k, p] of a) if (!b.has(k)) said.push(`${p.name} left the stage`);
    for (const [k, p] of b) if (a.has(k) && a.get(k).muted !== p.muted) said.push(`${p.name} is ${p.muted ? "muted" : "unmuted"}`);
    const oldReq = new Set((old.requests || []).map((r) => r.id));
    for (const r of s.requests || []) if (!oldReq.has(r.id)) said.push(`${r.name} asks to speak`);
    if (old.state !== "ended" && s.state === "ended") said.push("The Space has ended");
    if (said.length) announce(said.join(". "));
  }

  function update(s) {
    if (!s || (view.snap && s.version < view.snap.version)) return;
    const old = view.snap;
    if (old && s.version === old.version && s.listeners === old.listeners && JSON.stringify(s.reactions) === JSON.stringify(old.reactions)) return;
    view.snap = s;
    diffAnnounce(old, s);
    if (old) for (const [e, n] of Object.entries(s.reactions || {})) {
      const d = n - ((old.reactions || {})[e] || 0);
      for (let i = 0; i < Math.min(d, 5); i++) setTimeout(() => floatUp(e), i * 150);
    }
    const meOn = mine(s);
    // Off stage or ended: the stage has already closed our WHIP session; just hang up.
    if (view.publisher && (!meOn || s.state !== "live")) { stopPublishing(false); if (s.state === "live") announce("You are no longer on stage"); }
    if (view.publisher && meOn) view.publisher.setMuted(!!meOn.muted);
    if (s.state === "ended") stopPublishing(false);
    render();
    tellParent();
  }

  function paintSpeaking() {
    for (const li of $stage.querySelectorAll("li[data-id]")) {
      const on = view.speaking.has(li.dataset.id);
      li.classList.toggle("speaking", on);
      li.querySelector(".speaking-label").textContent = on ? "speaking" : "";
      const link = li.querySelector(".link-label");
      if (link) link.replaceChildren(...linkBadge(li.dataset.id));
    }
  }

  // The host (and co-hosts) see each speaker's uplink as the stage grades it (levels message).
  function linkBadge(id) {
    const q = view.links[id];
    if (!view.snap || !isMod(view.snap) || !q) return [];
    const detail = `${q.loss_pct} % loss, ${q.jitter_ms} ms jitter`;
    return [h("span", { class: `pill link ${q.quality}`, title: detail, "aria-label": `connection ${q.quality}: ${detail}` }, `link ${q.quality}`)];
  }

  function person(p, s) {
    const mod = isMod(s), host = myRole(s) === "host", self = p.id === me.id;
    const ctl = [];
    if (mod && !self && p.role !== "host") {
      if (!p.muted) ctl.push(h("button", { type: "button", class: "secondary", "aria-label": `Mute ${p.name}`, onclick: () => act("mute", { identity: p.id }) }, "Mute"));
      ctl.push(h("button", { type: "button", class: "secondary", "aria-label": `Move ${p.name} to audience`, onclick: () => act("to_audience", { identity: p.id }) }, "To audience"));
      if (host && p.role === "speaker") ctl.push(h("button", { type: "button", class: "secondary", "aria-label": `Make ${p.name} co-host`, onclick: () => act("add_cohost", { identity: p.id }) }, "Co-host"));
      if (host && p.role === "cohost") ctl.push(h("button", { type: "button", class: "secondary", "aria-label": `Remove co-host ${p.name}`, onclick: () => act("remove_cohost", { identity: p.id }) }, "Un-co-host"));
      ctl.push(h("button", { type: "button", class: "danger", "aria-label": `Remove and block ${p.name}`, onclick: () => { if (confirm(`Remove and block ${p.name}?`)) act("remove", { identity: p.id, block: true }); } }, "Remove"));
    }
    const role = p.role === "cohost" ? "co-host" : p.role;
    return h("li", { class: `person${view.speaking.has(p.id) ? " speaking" : ""}`, "data-id": p.id,
      "aria-label": `${p.name}, ${role}${p.muted ? ", muted" : ""}` },
      h("div", { class: "avatar", "aria-hidden": "true" }, initials(p.name)),
      h("div", {}, p.name, self ? " (you)" : ""),
      h("span", { class: "pill role" }, role),
      h("div", { class: "muted" }, p.muted ? "🔇 muted" : ""),
      h("div", { class: "meta speaking-label" }, view.speaking.has(p.id) ? "speaking" : ""),
      h("div", { class: "meta link-label" }, ...linkBadge(p.id)),
      ctl.length ? h("div", { class: "controls" }, ctl) : null);
  }

  // An ended, recorded Space becomes its replay: the file is seekable (Range), so the
  // browser's own <audio> gives play/pause and the scrubber; speed, "next speaker", the
  // reaction peaks and clips are here. A private (or signed-in only) Space's files need a
  // token that <audio src> cannot send: the page asks for a short-lived signed link (?t=).
  function paintReplay(s) {
    const rec = s.recording;
    const has = s.state === "ended" && rec && typeof rec === "object";
    $replay.hidden = !has;
    if (!has || $replay.dataset.url === `${rec.url} ${rec.state}`) return;
    $replay.dataset.url = `${rec.url} ${rec.state}`;
    if (rec.state === "expired") {
      $replay.replaceChildren(h("h2", {}, "Replay"), h("p", { class: "meta", id: "replay-gone" }, "This recording was kept for its time and is gone."));
      return;
    }
    const link = signedLinks(id, s);
    const audio = h("audio", { id: "replay-audio", controls: true, preload: "metadata" });
    // A signed link expires: when a later Range request fails, fetch a fresh one and go on
    // from where the replay was (at most once every 10 s, so a real failure does not loop).
    let at = 0, renewed = 0;
    audio.addEventListener("timeupdate", () => { at = audio.currentTime; });
    const load = async (from, play) => {
      audio.src = rec.url + await link.query();
      if (from) audio.currentTime = from;
      if (play) audio.play().catch(() => {});
    };
    audio.addEventListener("error", () => {
      if (!link.signed || performance.now() - renewed < 10000) return;
      renewed = performance.now(); link.drop();
      load(at, !audio.paused).catch(showError);
    });
    load(0, false).catch(showError);
    const speeds = h("div", { class: "row", role: "group", "aria-label": "Speed" }, [1, 1.5, 2].map((r) =>
      h("button", { type: "button", class: "secondary", "data-rate": r, "aria-pressed": r === 1 ? "true" : "false",
        onclick: (ev) => {
          audio.playbackRate = r;
          speeds.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", b === ev.currentTarget ? "true" : "false"));
        } }, `${r}×`)));
    const spans = h("ol", { class: "timeline", id: "timeline", "aria-label": "Who spoke when" });
    const peaks = h("ol", { class: "peaks", id: "peaks", "aria-label": "Where the reactions peaked" });
    const curve = h("div", { class: "curve", id: "curve", "aria-hidden": "true" });
    let timeline = [], offset = 0;
    const next = h("button", { type: "button", id: "next-speaker", onclick: () => {
      const later = timeline.find((x) => x.from > audio.currentTime + 0.5);
      if (later) audio.currentTime = later.from;
    } }, "⏭ Next speaker");
    const seek = (t) => { audio.currentTime = Math.max(0, t); };
    const mayClip = me.id && (s.host.id === me.id || (s.stage || []).some((p) => p.id === me.id));
    $replay.replaceChildren(h("h2", {}, "Replay"), audio, speeds, next,
      h("h3", {}, "Reactions"), curve, peaks, h("h3", {}, "Who spoke when"), spans,
      mayClip ? clipper(audio, () => offset) : null);
    link.query().then((q) => fetch(`/replay/${id}/timeline.json${q}`)).then((r) => (r.ok ? r.json() : null)).then((t) => {
      if (!t) return;
      timeline = t.speakers || [];
      offset = t.offset || 0;
      const names = { [s.host.id]: s.host.name, ...(t.names || {}) };
      spans.replaceChildren(...timeline.map((x) => h("li", {}, h("button", { type: "button", class: "link",
        onclick: () => seek(x.from) }, `${clock(x.from)}–${clock(x.to)} ${names[x.id] || x.id}`))));
      // Reactions come a moment after what caused them: a peak plays from a little before.
      peaks.replaceChildren(...(t.peaks || []).map((p) => h("li", {}, h("button", { type: "button", class: "link",
        "data-at": p.at, onclick: () => seek(p.at - PEAK_LEAD_S) }, `${p.emoji} ${p.count} at ${clock(p.at)}`))));
      if (!(t.peaks || []).length) peaks.replaceChildren(h("li", { class: "meta" }, "No reactions to speak of."));
      const most = Math.max(1, ...(t.curve || []));
      curve.replaceChildren(...(t.curve || []).map((n, i) => {
        const bar = h("span", { title: `${n} reactions at ${clock(i * t.bucket)}` });
        bar.style.height = `${Math.round((100 * n) / most)}%`;  // CSSOM: the CSP allows it
        bar.addEventListener("click", () => seek(i * t.bucket));
        return bar;
      }));
    }, () => {});
  }

  // The clip button (for who may clip): the 30 s before where the replay is, or a range.
  function clipper(audio, offset) {
    const from = h("input", { id: "clip-from", type: "number", min: "0", step: "0.1", "aria-label": "Clip from (seconds)" });
    const to = h("input", { id: "clip-to", type: "number", min: "0", step: "0.1", "aria-label": "Clip to (seconds)" });
    const out = h("div", { id: "clip-result", class: "row" });
    const make = async (a, b) => {
      const duration = Math.min(CLIP_MAX_S, b - a);
      if (!(duration > 0)) { showError(new Error("Pick a range: the end after the start.")); return; }
      try {
        const c = await api("POST", `/spaces/${id}/clips`, { start: offset() + a, duration });
        const url = `${siteOrigin()}${c.page}`;
        out.replaceChildren(h("a", { id: "clip-link", href: c.page }, url),
          h("button", { type: "button", class: "secondary", onclick: () => copyText(url, "Clip link") }, "Copy link"));
        announce(`Clip of ${Math.round(c.duration)} s made`);
      } catch (err) { showError(err); }
    };
    const fill = () => { to.value = audio.currentTime.toFixed(1); from.value = Math.max(0, audio.currentTime - 30).toFixed(1); };
    return h("section", { id: "clipper", "aria-label": "Make a clip" }, h("h3", {}, "Clip"),
      h("div", { class: "row" },
        h("button", { type: "button", id: "clip-last", onclick: () => make(Math.max(0, audio.currentTime - 30), audio.currentTime) }, "✂ Clip the last 30 s"),
        h("button", { type: "button", class: "secondary", onclick: fill }, "Range from here")),
      h("div", { class: "row" }, from, to,
        h("button", { type: "button", id: "clip-range", class: "secondary", onclick: () => make(Number(from.value), Number(to.value)) }, "Clip this range")),
      out);
  }

  function render() {
    const s = view.snap;
    $title.textContent = s.title;
    $title.append(h("span", { class: `pill ${s.state}`, id: "state" }, s.state === "live" ? "LIVE" : s.state));
    $hostline.textContent = `Hosted by ${s.host.name}${s.description ? ` · ${s.description}` : ""}`;
    $count.textContent = `${s.listeners} listening${s.recording === true && s.state === "live" ? " · ● recording" : ""}`;
    paintReplay(s);
    $stage.replaceChildren(...(s.stage || []).map((p) => person(p, s)));
    $totals.textContent = Object.entries(s.reactions || {}).filter(([, n]) => n > 0).map(([e, n]) => `${e} ${n}`).join("  ");
    $endnote.hidden = s.state !== "ended";
    $reacts.hidden = s.state !== "live";

    const meOn = mine(s), a = [];
    const requested = (s.requests || []).some((r) => r.id === me.id);
    const invited = (s.invites || []).some((r) => r.id === me.id);
    if (s.state === "live") {
      if (!view.publisher) {
        a.push(view.listening
          ? h("button", { type: "button", id: "pause", class: "secondary", onclick: pause }, "⏸ Pause")
          : h("button", { type: "button", id: "listen", onclick: listen }, "🎧 Listen"));
      }
      if (embed) {
        // The embed is a player: the stage and requests to speak live on the Space page.
      } else if (meOn) {
        if (!view.publisher) a.push(h("button", { type: "button", id: "go-live", disabled: view.going, onclick: goLive }, view.going ? "Connecting…" : "🎙️ Go live"));
        a.push(meOn.muted
          ? h("button", { type: "button", id: "mic", "aria-pressed": "false", onclick: () => act("unmute") }, "Microphone on")
          : h("button", { type: "button", id: "mic", class: "secondary", "aria-pressed": "true", onclick: () => act("mute", { identity: me.id }) }, "Microphone off"));
        if (meOn.role !== "host") a.push(h("button", { type: "button", id: "leave-stage", class: "secondary", onclick: () => { stopPublishing(); act("to_audience", { identity: me.id }); } }, "Leave stage"));
      } else if (invited) {
        a.push(h("button", { type: "button", id: "accept", onclick: () => act("accept") }, "Accept invite to speak"));
      } else if (requested) {
        a.push(h("button", { type: "button", id: "withdraw", class: "secondary", onclick: () => act("withdraw") }, "Withdraw request"));
      } else {
        a.push(h("button", { type: "button", id: "request", onclick: requestToSpeak }, "✋ Request to speak"));
      }
      if (view.publisher) a.push(h("span", { class: "pill live", id: "on-air" }, "ON AIR"));
    } else if (s.state === "scheduled") {
      a.push(h("span", { class: "meta" }, `Scheduled for ${s.scheduled_start ? new Date(s.scheduled_start).toLocaleString() : "later"}`));
      if (s.host.id === me.id) a.push(h("button", { type: "button", id: "start", onclick: async () => { try { update(await api("POST", `/spaces/${id}/start`)); } catch (err) { showError(err); } } }, "Start now"));
    } else if (!embed) {
      a.push(h("a", { href: "/", "data-link": true }, "Back to Spaces"));
    }
    const hadFocus = document.activeElement?.id;
    $actions.replaceChildren(...a);
    if (hadFocus && !document.getElementById(hadFocus)) focusMain();
    else if (hadFocus) document.getElementById(hadFocus)?.focus();

    // Host / co-host controls: requests, invite, end.
    if (isMod(s) && s.state === "live") {
      const who = h("input", { id: "invite-id", name: "invite", placeholder: "identity" });
      $host.hidden = false;
      $host.replaceChildren(h("h2", {}, "Requests to speak"),
        (s.requests || []).length ? h("ul", { class: "requests" }, s.requests.map((r) => h("li", {}, r.name,
          h("button", { type: "button", "aria-label": `Approve ${r.name}`, onclick: () => act("approve", { identity: r.id }) }, "Approve"),
          h("button", { type: "button", class: "secondary", "aria-label": `Decline ${r.name}`, onclick: () => act("decline", { identity: r.id }) }, "Decline"))))
          : h("p", { class: "meta" }, "No requests."),
        h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); if (who.value.trim()) act("invite", { identity: who.value.trim() }); } },
          h("label", { for: "invite-id" }, "Invite to speak"), who, h("button", { type: "submit", class: "secondary" }, "Invite")),
        myRole(s) === "host" ? h("p", {}, h("button", { type: "button", id: "end", class: "danger", onclick: async () => {
          if (!confirm("End this Space for everyone?")) return;
          try { update(await api("POST", `/spaces/${id}/end`)); } catch (err) { showError(err); }
        } }, "End Space")) : null);
    } else { $host.hidden = true; $host.replaceChildren(); }
  }

  // ---- the embed's postMessage API (docs/embed.md) ----
  function tellParent() {
    if (!embed || window.parent === window || !view.snap) return;
    const s = view.snap;
    window.parent.postMessage({ type: "state", space: id, title: s.title, host: s.host.name, state: s.state,
      listeners: s.listeners, playing: view.listening }, "*");  // public facts only: any parent may read them
  }
  const onMessage = (e) => {
    if (!embed || e.source !== window.parent || !e.data) return;
    if (e.data.type === "play" && !view.listening && view.snap.state === "live") listen();
    else if (e.data.type === "pause" && view.listening) pause();
    else if (e.data.type === "get_state") tellParent();
  };
  window.addEventListener("message", onMessage);

  update(snap);
  player.start();  // state, levels and jumps from the socket from now on: no polling
  page = () => { window.removeEventListener("message", onMessage); stopPublishing(); player.stop(); };
  window.addEventListener("pagehide", () => page?.(), { once: true });
}

adoptLinkToken().finally(route);
// A sign-in link opened in a tab already on this page changes only the fragment.
window.addEventListener("hashchange", () => { if (/(^#|&)token=/.test(location.hash)) adoptLinkToken().finally(route); });
