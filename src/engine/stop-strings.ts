// Stop strings, matched on the text as it streams, across token boundaries.
//
// Text that could still turn out to be the start of a stop string is held back, never emitted
// early, and a stop string itself is never emitted:
//
//   stop "END", pushes "the E", "N", "D!"  ->  emits "the ", "", "" then stops.
//   stop "END", pushes "the E", "x"        ->  emits "the ", "Ex".

export interface StopResult {
  /** Text that is now safe to show. */
  text: string;
  /** True once a stop string matched; `text` is everything before it. */
  stopped: boolean;
}

export class StopStringMatcher {
  private readonly stops: string[];
  private readonly longest: number;
  private pending = '';
  private done = false;

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  push(text: string): StopResult {
    if (this.done) return { text: '', stopped: true };
    if (this.stops.length === 0) return { text, stopped: false };
    const buffer = this.pending + text;

    // The earliest match wins (what precedes it is the same whichever string matched there).
    let at = -1;
    for (const s of this.stops) {
      const i = buffer.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.done = true;
      this.pending = '';
      return { text: buffer.slice(0, at), stopped: true };
    }

    const hold = this.heldSuffixLength(buffer);
    this.pending = buffer.slice(buffer.length - hold);
    return { text: buffer.slice(0, buffer.length - hold), stopped: false };
  }

  /** The text held back, released when generation ends for another reason. */
  flush(): string {
    const rest = this.done ? '' : this.pending;
    this.pending = '';
    return rest;
  }

  /** Length of the longest suffix of `buffer` that is a proper prefix of some stop string. */
  private heldSuffixLength(buffer: string): number {
    for (let n = Math.min(buffer.length, this.longest - 1); n > 0; n--) {
      const suffix = buffer.slice(buffer.length - n);
      if (this.stops.some((s) => s.startsWith(suffix))) return n;
    }
    return 0;
  }
}
