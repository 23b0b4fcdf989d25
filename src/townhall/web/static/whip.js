// Publishing to the stage over WHIP: one RTCPeerConnection, microphone up, return feed down.
import { token } from "./api.js";

/** A speaker's WHIP session: the mic goes up, the mix-minus return feed plays in <audio>. */
export class Publisher {
  constructor(space, audioEl) {
    this.space = space;
    this.audioEl = audioEl;
    this.pc = null;
    this.stream = null;
    this.location = null;
    this.state = "idle"; // idle | starting | live | failed | closed
  }

  async start() {
    if (this.state === "starting" || this.state === "live") return;
    this.state = "starting";
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video: false });
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      const [track] = this.stream.getAudioTracks();
      pc.addTransceiver(track, { direction: "sendrecv", streams: [this.stream] });
      pc.ontrack = (ev) => {
        // The return feed plays through a plain <audio> element (never Web Audio).
        this.audioEl.srcObject = ev.streams[0] || new MediaStream([ev.track]);
        this.audioEl.play().catch(() => {});
      };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "failed") this.state = "failed";
        if (pc.connectionState === "connected") this.state = "live";
      };
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 5000);
      const res = await fetch(`/whip/${this.space}`, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", "Authorization": `Bearer ${token()}` },
        body: pc.localDescription.sdp,
      });
      if (res.status !== 201) throw new Error(`WHIP refused: HTTP ${res.status} ${await res.text()}`);
      this.location = res.headers.get("Location");
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      if (this.state === "starting") this.state = "live";
    } catch (err) {
      this.state = "failed";
      this.stop(false);
      throw err;
    }
  }

  /** Mic on or off locally (the api's mute state is set separately). */
  setMicEnabled(on) {
    if (this.stream) for (const t of this.stream.getAudioTracks()) t.enabled = on;
  }

  async stop(sendDelete = true) {
    const loc = this.location;
    this.location = null;
    if (this.pc) { this.pc.close(); this.pc = null; }
    if (this.stream) { for (const t of this.stream.getTracks()) t.stop(); this.stream = null; }
    this.audioEl.srcObject = null;
    if (this.state !== "failed") this.state = "closed";
    if (sendDelete && loc) {
      try { await fetch(loc, { method: "DELETE", headers: { "Authorization": `Bearer ${token()}` } }); } catch { /* best effort */ }
    }
  }
}

function waitForIce(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs); // host candidates are enough on loopback
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}
