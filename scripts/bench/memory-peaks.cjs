// Preloaded (`node --require`): samples process.memoryUsage() every 50 ms and prints each field's
// peak in MB to stderr at exit, as `memory peaks: rss=… heapTotal=… heapUsed=… external=… arrayBuffers=…`.
const peaks = {};
const timer = setInterval(() => {
  const usage = process.memoryUsage();
  for (const k in usage) peaks[k] = Math.max(peaks[k] ?? 0, usage[k]);
}, 50);
timer.unref();
process.on('exit', () => {
  process.stderr.write(`memory peaks: ${Object.entries(peaks).map(([k, v]) => `${k}=${Math.round(v / 1e6)}`).join(' ')}\n`);
});
