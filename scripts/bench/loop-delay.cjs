// Preloaded into the CLI by the benchmark (node --require): the main thread's worst event-loop
// delay during the upload, written to BENCH_LOOP_DELAY_FILE at exit. Not part of the tool.
//
// "During the upload" starts at the first request that sends keys (seen through undici's
// diagnostics channel, which Node's fetch publishes): before it, the process is loading its
// modules and Node's fetch implementation (a few hundred ms of compilation on a slow host),
// which no upload pipeline can avoid and which says nothing about how it keeps the loop free.
const { monitorEventLoopDelay } = require('node:perf_hooks');
const diagnostics = require('node:diagnostics_channel');
const fs = require('node:fs');
const histogram = monitorEventLoopDelay({ resolution: 10 });
let started = false;
const onRequest = ({ request }) => {
  if (!started && String(request.path).includes('/room_keys/keys')) {
    started = true;
    histogram.enable();
    diagnostics.unsubscribe('undici:request:create', onRequest);
  }
};
diagnostics.subscribe('undici:request:create', onRequest);
process.on('exit', () => {
  histogram.disable();
  if (process.env.BENCH_LOOP_DELAY_FILE) {
    const ms = (ns) => (started ? ns / 1e6 : null);
    fs.writeFileSync(process.env.BENCH_LOOP_DELAY_FILE, JSON.stringify({ max_ms: ms(histogram.max), p99_ms: ms(histogram.percentile(99)) }));
  }
});
