// Plays decoded program audio from a small adaptive buffer: grows on underrun, trims when late.
const RATE = 48000;
const MIN_TARGET = RATE * 0.08;  // 80 ms
const MAX_TARGET = RATE * 0.6;   // 600 ms

class TownhallPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];      // Float32Array blocks at 48 kHz mono
    this.offset = 0;      // read position in queue[0]
    this.buffered = 0;    // samples queued
    this.target = MIN_TARGET;
    this.playing = false; // false while (re)filling to target
    this.underruns = 0;
    this.port.onmessage = (ev) => {
      if (ev.data === "flush") { this.queue = []; this.offset = 0; this.buffered = 0; this.playing = false; return; }
      this.queue.push(ev.data);
      this.buffered += ev.data.length;
      // Far behind live: drop the oldest audio rather than drift further.
      while (this.buffered > this.target + RATE * 0.3 && this.queue.length > 1) {
        const old = this.queue.shift();
        this.buffered -= old.length - this.offset;
        this.offset = 0;
      }
    };
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing) {
      if (this.buffered >= this.target) this.playing = true; else { out.fill(0); return true; }
    }
    let i = 0;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), i);
      i += n; this.offset += n; this.buffered -= n;
      if (this.offset >= head.length) { this.queue.shift(); this.offset = 0; }
    }
    if (i < out.length) {
      out.fill(0, i);
      // Underrun: refill to a deeper target so the next stall is less likely.
      this.playing = false;
      this.underruns += 1;
      this.target = Math.min(MAX_TARGET, this.target + RATE * 0.04);
      this.port.postMessage({ underruns: this.underruns, target: this.target / RATE });
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}

registerProcessor("townhall-player", TownhallPlayer);
