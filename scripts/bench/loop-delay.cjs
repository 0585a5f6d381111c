// Preloaded into the CLI by the benchmark (NODE_OPTIONS=--require): the main thread's worst
// event-loop delay over the run, written to BENCH_LOOP_DELAY_FILE at exit. Not part of the tool.
const { monitorEventLoopDelay } = require('node:perf_hooks');
const fs = require('node:fs');
const histogram = monitorEventLoopDelay({ resolution: 10 });
histogram.enable();
process.on('exit', () => {
  histogram.disable();
  if (process.env.BENCH_LOOP_DELAY_FILE) {
    fs.writeFileSync(process.env.BENCH_LOOP_DELAY_FILE, JSON.stringify({ max_ms: histogram.max / 1e6, p99_ms: histogram.percentile(99) / 1e6 }));
  }
});
