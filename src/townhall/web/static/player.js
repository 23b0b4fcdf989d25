// Listening: WebSocket /ws/{id} → Chunk frames → WebCodecs AudioDecoder → AudioWorklet.
// Falls back to <audio src="/listen/{id}.opus"> where WebCodecs is missing.
// Which edge: the api's /api/v1/spaces/{id}/listen list, least loaded first; a socket that
// fails moves down the list, and a list tried to its end is fetched again.

const MAGIC = 0x54484331; // "THC1"
const FRAME_SAMPLES = 960;
// A live Space sends chunks (silence included) at least every second; a socket quiet for
// this long is stalled (e.g. a network that went away without a close) and is replaced.
const STALL_MS = 5000;

/** Parse Chunk.encode() bytes (src/townhall/media/chunk.py); null when not a chunk. */
export function parseChunk(buf) {
  const dv = new DataView(buf);
  if (dv.byteLength < 30 || dv.getUint32(0) !== MAGIC) return null;
  const seq = Number(dv.getBigUint64(4));
  const pts = Number(dv.getBigUint64(12));
  const sentUs = Number(dv.getBigUint64(20));
  const n = dv.getUint16(28);
  const packets = [];
  let off = 30;
  for (let i = 0; i < n; i++) {
    if (off + 2 > dv.byteLength) return null;
    const len = dv.getUint16(off); off += 2;
    if (off + len > dv.byteLength) return null;
    packets.push(new Uint8Array(buf, off, len)); off += len;
  }
  return { seq, pts, sentUs, packets };
}

/** Full-jitter backoff: a random delay in [0, min(cap, base·2^attempt)). */
export function backoffMs(attempt, base = 500, cap = 10000) {
  return Math.random() * Math.min(cap, base * 2 ** attempt);
}

/** The WebSocket URL for an edge's `ws` (an absolute http(s) URL or a same-origin path). */
export function edgeSocketUrl(ws, pageUrl, from, token) {
  const u = new URL(ws, pageUrl);
  u.protocol = u.protocol === "https:" || u.protocol === "wss:" ? "wss:" : "ws:";
  if (from !== null && from !== undefined) u.searchParams.set("from", String(from));
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

/** The edges to try for a Space, in the api's order; same origin until the api says. */
export class EdgeChoice {
  constructor(space) {
    this.edges = [{ ws: `/ws/${space}`, ogg: `/listen/${space}.opus` }];
    this.index = 0;
  }

  set(edges) {
    const usable = (edges || []).filter((e) => e && e.ws && e.ogg);
    if (usable.length) { this.edges = usable.map((e) => ({ ws: e.ws, ogg: e.ogg })); this.index = 0; }
  }

  get current() { return this.edges[this.index % this.edges.length]; }

  /** Move to the next edge; true when the list wrapped (every edge tried: back off, ask again). */
  next() {
    this.index += 1;
    if (this.index < this.edges.length) return false;
    this.index = 0;
    return true;
  }
}

/** One listener of a Space: state and levels to callbacks, audio to the speakers. */
export class Player {
  constructor(space, { onState, onLevels, onStatus, onEnded }, token) {
    this.space = space;
    this.token = token || null;
    this.onState = onState || (() => {});
    this.onLevels = onLevels || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onEnded = onEnded || (() => {});
    this.ws = null;
    this.choice = new EdgeChoice(space);
    this.pickedAt = -Infinity;
    this.nextSeq = null;
    this.attempt = 0;
    this.closed = false;
    this.audible = true;
    this.ctx = null;
    this.node = null;
    this.decoder = null;
    this.fallback = null;
    this.timer = null;
    this.live = false;       // the Space is live, so chunks must keep coming
    this.lastMessage = 0;
    this.watchdog = setInterval(() => this._checkStall(), 1000);
    const webcodecs = "AudioDecoder" in window;
    // Read by tests and by people debugging in the console.
    this.stats = { framesDecoded: 0, level: 0, peak: 0, gaps: 0, underruns: 0, chunks: 0, connects: 0, state: "connecting",
      webcodecs, mode: webcodecs ? "webcodecs" : "ogg", edge: null };
    window.townhallPlayer = this.stats;
  }

  start() {
    this._pickEdges().finally(() => {
      if (!this.stats.webcodecs) { this._startFallback(); }
      this._connect();
    });
  }

  /** Ask the api which edges serve this Space; keep the current list if it cannot say.
   *  At most every 10 s: in a reconnect storm every listener would otherwise ask at once. */
  async _pickEdges() {
    if (performance.now() - this.pickedAt < 10000) return;
    this.pickedAt = performance.now();
    try {
      const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
      const res = await fetch(`/api/v1/spaces/${this.space}/listen`, { headers, signal: AbortSignal.timeout(5000) });
      if (res.ok) this.choice.set((await res.json()).edges);
    } catch { /* offline or slow: the list we have (same origin at worst) */ }
  }

  /** Start sound output (needs a user gesture in most browsers). */
  async enableAudio() {
    if (!this.stats.webcodecs) { if (this.fallback) await this.fallback.play(); return; }
    if (!this.ctx) {
      this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
      // Beside this module, under the same versioned URL.
      await this.ctx.audioWorklet.addModule(new URL("./worklet.js", import.meta.url).href);
      this.node = new AudioWorkletNode(this.ctx, "townhall-player", { numberOfInputs: 0, outputChannelCount: [1] });
      this.node.port.onmessage = (ev) => { this.stats.underruns = ev.data.underruns; };
      this.node.connect(this.ctx.destination);
    }
    await this.ctx.resume();
  }

  /** Stop sound output; the socket stays open, so state keeps coming and play resumes live. */
  async pause() {
    this.mute(true);
    if (this.fallback) this.fallback.pause();
    if (this.ctx && this.ctx.state === "running") await this.ctx.suspend();
  }

  get audioRunning() {
    if (!this.stats.webcodecs) return !!(this.fallback && !this.fallback.paused);
    return !!(this.ctx && this.ctx.state === "running");
  }

  /** Speakers hear the return feed instead of the program: silence the program locally. */
  mute(muted) {
    const on = !muted;
    this.audible = on;
    if (this.fallback) this.fallback.muted = !on;
    if (!on && this.node) this.node.port.postMessage("flush");
  }

  stop() {
    this.closed = true;
    clearInterval(this.watchdog);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    if (this.ctx) this.ctx.close();
    if (this.fallback) { this.fallback.pause(); this.fallback.removeAttribute("src"); this.fallback.remove(); }
  }

  // Tell the page: kind null hides the banner; otherwise a sentence people can read.
  _status(state, detail) {
    this.stats.state = state;
    const text = {
      live: null,
      reconnecting: "Reconnecting…",
      full: `This Space is full — retrying in ${detail} s`,
      ended: null,
      refused: "You can't listen to this Space.",
    }[state];
    this.onStatus(text ? state : null, text || "");
  }

  _url() {
    return edgeSocketUrl(this.choice.current.ws, location.href, this.nextSeq, this.token);
  }

  _connect() {
    if (this.closed) return;
    this.stats.connects += 1;
    this.stats.edge = new URL(this.choice.current.ws, location.href).href;
    const ws = new WebSocket(this._url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.lastMessage = performance.now();
    ws.onmessage = (ev) => {
      this.lastMessage = performance.now();
      if (typeof ev.data === "string") this._text(JSON.parse(ev.data));
      else this._chunk(ev.data);
    };
    ws.onclose = (ev) => this._closed(ev);
  }

  _text(msg) {
    if (msg.type === "hello") {
      this.attempt = 0;
      if (this.nextSeq !== null && msg.from > this.nextSeq) this.stats.gaps += msg.from - this.nextSeq;
      this._status("live");
    } else if (msg.type === "state") {
      this.live = !!msg.snapshot && msg.snapshot.state === "live";
      this.onState(msg.snapshot);
    } else if (msg.type === "levels") {
      this.onLevels(msg);
    } else if (msg.type === "jump") {
      this.stats.gaps += Math.max(0, msg.to - msg.from);
      this.nextSeq = msg.to;
    }
  }

  _decoder() {
    if (this.decoder && this.decoder.state === "configured") return this.decoder;
    this.decoder = new AudioDecoder({
      output: (data) => this._decoded(data),
      error: () => { this.decoder = null; }, // a fresh decoder on the next chunk
    });
    this.decoder.configure({ codec: "opus", sampleRate: 48000, numberOfChannels: 1 });
    return this.decoder;
  }

  _chunk(buf) {
    const chunk = parseChunk(buf);
    if (!chunk) return;
    if (this.nextSeq !== null && chunk.seq < this.nextSeq) return; // already played
    if (this.nextSeq !== null && chunk.seq > this.nextSeq) this.stats.gaps += chunk.seq - this.nextSeq;
    this.nextSeq = chunk.seq + 1;
    this.stats.chunks += 1;
    if (!this.stats.webcodecs) return;
    const dec = this._decoder();
    chunk.packets.forEach((pkt, i) => {
      const ts = Math.round(((chunk.pts + i * FRAME_SAMPLES) * 1e6) / 48000);
      dec.decode(new EncodedAudioChunk({ type: "key", timestamp: ts, data: pkt }));
    });
  }

  _decoded(data) {
    const n = data.numberOfFrames;
    const pcm = new Float32Array(n);
    data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
    data.close();
    this.stats.framesDecoded += 1;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += pcm[i] * pcm[i];
    const rms = Math.sqrt(sum / Math.max(1, n));
    // Fast attack, slow release: a level meter people (and tests) can read.
    this.stats.level = rms > this.stats.level ? rms : this.stats.level * 0.95 + rms * 0.05;
    if (rms > this.stats.peak) this.stats.peak = rms;
    if (this.node && this.audible && this.ctx.state === "running") this.node.port.postMessage(pcm, [pcm.buffer]);
  }

  _closed(ev) {
    this.ws = null;
    if (this.closed) return;
    let reason = {};
    try { reason = ev.reason ? JSON.parse(ev.reason) : {}; } catch { reason = {}; }
    if (ev.code === 4410) { this._status("ended"); this.onEnded(); return; }
    if (ev.code === 4404 || ev.code === 4403 || ev.code === 4401) { this._status("refused", ev.code); return; }
    if (ev.code === 4408 && reason.resume_from !== undefined) this.nextSeq = reason.resume_from;
    const wrapped = this.choice.next();
    if (ev.code === 4503) {
      if (!wrapped) { this._connect(); return; }  // the next edge may have room
      this._countdown(Math.max(1, Math.ceil(reason.retry_after || 5)));
      return;
    }
    const delay = backoffMs(this.attempt++);
    this._status("reconnecting", Math.ceil(delay / 1000));
    this.timer = setTimeout(() => {
      if (wrapped) this._pickEdges().finally(() => this._connect());
      else this._connect();
    }, delay);
  }

  _checkStall() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.live) return;
    if (performance.now() - this.lastMessage < STALL_MS) return;
    // Drop the stalled socket without waiting for a close handshake that may never come.
    ws.onmessage = null; ws.onclose = null;
    ws.close(4000, "stalled");
    this._closed({ code: 4000, reason: "" });
  }

  _countdown(seconds) {
    this._status("full", seconds);
    if (seconds <= 0) { this._pickEdges().finally(() => this._connect()); return; }
    this.timer = setTimeout(() => this._countdown(seconds - 1), 1000);
  }

  _startFallback() {
    const el = document.createElement("audio");
    el.src = new URL(this.choice.current.ogg, location.href).href;
    el.preload = "none";
    el.hidden = true;
    el.addEventListener("error", async () => {
      if (this.closed) return;
      const res = await fetch(el.src, { method: "GET" }).catch(() => null);
      if (res && res.status === 503) {
        const s = parseInt(res.headers.get("Retry-After") || "5", 10);
        if (res.body) res.body.cancel();
        this._countdown(s);
        this.timer = setTimeout(() => { el.load(); el.play().catch(() => {}); }, s * 1000);
      }
    });
    document.body.appendChild(el);
    this.fallback = el;
  }
}
