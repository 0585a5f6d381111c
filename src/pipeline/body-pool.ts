/**
 * The buffers upload request bodies are built in, used again from one request to the next.
 *
 * A body lives until the server answers it: up to a second or two at the largest sizes, so its
 * Buffer outlives V8's young generation, and an old Buffer's bytes are freed only by a full GC,
 * which external memory sets off late (V8 lets it grow by tens of MB first). With 12 MiB bodies
 * those dead bodies were most of what the 1M and 5M uploads held past the 2 MiB ones (202 MB
 * against 151 at 1M, docs/benchmarks.md, the PostgreSQL section). Reused, the bodies cost their
 * requests in flight, whatever the GC does.
 */
export class BodyPool {
  private free: ArrayBuffer[] = [];

  /** `keep`: the most buffers waiting to be used again (the requests in flight, and one more). */
  constructor(private readonly keep: number) {}

  /**
   * A buffer of `length` bytes for a body, in a free one where one is large enough, else in a new
   * one of `capacity` bytes (the current limit: later bodies fit in it too).
   */
  take(length: number, capacity: number): Buffer<ArrayBuffer> {
    const fit = this.free.findIndex((b) => b.byteLength >= length);
    let bytes: ArrayBuffer;
    if (fit >= 0) {
      bytes = this.free.splice(fit, 1)[0]!;
    } else {
      // Buffers too small for the limit now (it grew) would never be taken again.
      this.free = this.free.filter((b) => b.byteLength >= capacity);
      bytes = Buffer.allocUnsafeSlow(Math.max(length, capacity)).buffer;
    }
    return Buffer.from(bytes, 0, length);
  }

  /** Takes a body's buffer back once nothing reads it any more (its request was answered). */
  give(body: Buffer<ArrayBuffer>): void {
    if (this.free.length < this.keep && !this.free.includes(body.buffer)) this.free.push(body.buffer);
  }

  /** Buffers waiting, for tests. */
  get waiting(): number {
    return this.free.length;
  }
}
