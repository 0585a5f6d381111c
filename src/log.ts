/**
 * Operator-facing output. Results go to stdout; progress and log lines to stderr. On a terminal
 * progress is one redrawn line; elsewhere (Kubernetes logs) it is a line every so often.
 * Nothing that reaches here may contain a secret: callers pass counts, IDs and paths only.
 */
import { diagnostics } from './environment.js';

export interface Output {
  result(line: string): void;
  info(line: string): void;
  warn(line: string): void;
  verbose(line: string): void;
  /** Counts items (a line every 1000 in logs), or with `bytes` sizes with a rate and ETA (a line every 10 s). */
  progress(label: string, opts?: { bytes?: boolean }): Progress;
  readonly interactive: boolean;
}

export interface Progress {
  /** `done` items so far; `total` when known. */
  update(done: number, total?: number, extra?: string): void;
  end(): void;
}

export function createOutput(opts: { verbose?: boolean; resultsToStderr?: boolean; stdout?: NodeJS.WriteStream; stderr?: NodeJS.WriteStream } = {}): Output {
  const stderr = opts.stderr ?? process.stderr;
  const stdout = opts.resultsToStderr ? stderr : (opts.stdout ?? process.stdout);
  const interactive = Boolean(stderr.isTTY) && !diagnostics.ci();
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
    progress(label, popts) {
      const started = Date.now();
      let lastDraw = 0;
      let nextLogAt = popts?.bytes ? 0 : 1000;
      let nextLogTime = started + 10_000;
      return {
        update(done, total, extra) {
          const now = Date.now();
          const rate = done / Math.max((now - started) / 1000, 0.001);
          const text = popts?.bytes
            ? `${label}: ${formatBytes(done)}${total ? ` of ${formatBytes(total)}` : ''} (${formatBytes(rate)}/s${total && rate > 0 ? `, ${formatDuration((total - done) / rate)} left` : ''})${extra ? ` ${extra}` : ''}`
            : `${label}: ${formatCount(done)}${total ? `/${formatCount(total)}` : ''} (${formatCount(Math.round(rate))}/s)${extra ? ` ${extra}` : ''}`;
          if (interactive) {
            if (now - lastDraw < 100) return;
            lastDraw = now;
            const pct = total ? ` ${bar(done / total)} ${((100 * done) / total).toFixed(1)}%` : '';
            stderr.write(`\r\x1b[K${text}${pct}`);
            drawing = true;
          } else if (popts?.bytes ? now >= nextLogTime : done >= nextLogAt) {
            nextLogAt = (Math.floor(done / 1000) + 1) * 1000;
            nextLogTime = now + 10_000;
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

/** 1234567 → "1,234,567". Not toLocaleString: its first call loads ICU's number formatting,
 * which blocked the event loop for 40 ms in the middle of an upload. */
function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function bar(fraction: number): string {
  const width = 24;
  const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 10) return `${Math.max(0, seconds).toFixed(1)}s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
