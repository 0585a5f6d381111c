/**
 * Operator-facing output. Results go to stdout; progress and log lines to stderr. On a terminal
 * progress is one redrawn line; elsewhere (Kubernetes logs) it is a line every so often.
 * Nothing that reaches here may contain a secret: callers pass counts, IDs and paths only.
 */

export interface Output {
  result(line: string): void;
  info(line: string): void;
  warn(line: string): void;
  verbose(line: string): void;
  progress(label: string): Progress;
  readonly interactive: boolean;
}

export interface Progress {
  /** `done` items so far; `total` when known. */
  update(done: number, total?: number, extra?: string): void;
  end(): void;
}

export function createOutput(opts: { verbose?: boolean; stdout?: NodeJS.WriteStream; stderr?: NodeJS.WriteStream } = {}): Output {
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const interactive = Boolean(stderr.isTTY) && process.env.CI !== 'true';
  let drawing = false;
  const clearBar = () => {
    if (drawing) {
      stderr.write('\r\x1b[K');
      drawing = false;
    }
  };
  const line = (stream: NodeJS.WriteStream, text: string) => {
    clearBar();
    stream.write(text + '\n');
  };
  return {
    interactive,
    result: (text) => line(stdout, text),
    info: (text) => line(stderr, text),
    warn: (text) => line(stderr, `warning: ${text}`),
    verbose: (text) => {
      if (opts.verbose) line(stderr, text);
    },
    progress(label) {
      const started = Date.now();
      let lastDraw = 0;
      let nextLogAt = 1000;
      return {
        update(done, total, extra) {
          const now = Date.now();
          const rate = done / Math.max((now - started) / 1000, 0.001);
          const text = `${label}: ${done.toLocaleString('en-US')}${total ? `/${total.toLocaleString('en-US')}` : ''} (${Math.round(rate).toLocaleString('en-US')}/s)${extra ? ` ${extra}` : ''}`;
          if (interactive) {
            if (now - lastDraw < 100) return;
            lastDraw = now;
            const pct = total ? ` ${bar(done / total)} ${((100 * done) / total).toFixed(1)}%` : '';
            stderr.write(`\r\x1b[K${text}${pct}`);
            drawing = true;
          } else if (done >= nextLogAt) {
            nextLogAt = (Math.floor(done / 1000) + 1) * 1000;
            line(stderr, text);
          }
        },
        end() {
          clearBar();
        },
      };
    },
  };
}

function bar(fraction: number): string {
  const width = 24;
  const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}
