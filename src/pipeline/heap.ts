import v8 from 'node:v8';

/**
 * Runs `work` with V8's old-generation growth capped at 10% past the live heap.
 *
 * After each full GC V8 lets the old generation grow to up to 4× its live size before the next.
 * The long commands' live heaps are small and do not grow with the store (upload: the requests in
 * flight; verify: one room's download, the fingerprints being native), but what they allocate
 * lives until the server answers, so it is promoted and the heap swung by tens of MB of garbage on
 * long runs. The cap keeps it within a few MB of the live size at the same rate (V8 reads the flag
 * after every full GC; measured in docs/performance-notes.md).
 */
export async function withCappedHeapGrowth<T>(work: () => Promise<T>): Promise<T> {
  v8.setFlagsFromString('--heap-growing-percent=10');
  try {
    return await work();
  } finally {
    v8.setFlagsFromString('--heap-growing-percent=0'); // V8's default: its own heuristics
  }
}
