#!/usr/bin/env node
// `npm test`: the Rust tests (cargo, both workspaces) and the ava specs, then one closing line
// `N passed, N failed` that counts them all. Exits non-zero if anything failed.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
let passed = 0;
let failed = 0;
let broken = [];

function run(label, cmd, args, parse) {
  return new Promise((resolve) => {
    process.stdout.write(`\n== ${label}: ${cmd} ${args.join(' ')}\n`);
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let buffer = '';
    const onData = (stream) => (chunk) => {
      stream.write(chunk);
      buffer += chunk.toString();
    };
    child.stdout.on('data', onData(process.stdout));
    child.stderr.on('data', onData(process.stderr));
    child.on('close', (code) => {
      const counts = parse(buffer);
      passed += counts.passed;
      failed += counts.failed;
      if (code !== 0 && counts.failed === 0) {
        // a crash or a build failure: count it, so it cannot pass silently
        failed += 1;
        broken.push(`${label} exited ${code}`);
      }
      resolve();
    });
  });
}

// cargo: "test result: ok. 12 passed; 0 failed; ..." once per test binary
function parseCargo(text) {
  let p = 0;
  let f = 0;
  for (const m of text.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed/g)) {
    p += Number(m[1]);
    f += Number(m[2]);
  }
  return { passed: p, failed: f };
}

// ava TAP: "# pass N" / "# fail N"
function parseTap(text) {
  const p = /^# pass (\d+)/m.exec(text);
  const f = /^# fail (\d+)/m.exec(text);
  return { passed: p ? Number(p[1]) : 0, failed: f ? Number(f[1]) : 0 };
}

const only = process.argv[2];
if (!only || only === 'rust') await run('rust', 'cargo', ['test', '--workspace', '--release'], parseCargo);
// What the ava specs fetch or build on first use: the fixture writer (its own workspace on the 2022
// crates; the specs generate their bigger genuine stores with it) and Synapse from PyPI. Done here,
// before ava starts: done inside the specs' hooks on a fresh clone it takes minutes, in which no
// spec finishes, past ava's timeout.
const none = () => ({ passed: 0, failed: 0 });
if (!only || only === 'js') {
  await run('fixture writer', 'cargo', ['build', '--release', '--quiet', '--manifest-path', 'crates/fixture-writer/Cargo.toml'], none);
  await run('synapse', 'bash', ['scripts/install-synapse.sh'], none);
  // Debian's PostgreSQL and the venv's psycopg2, for the spec that runs Synapse on PostgreSQL.
  await run('postgres', 'bash', ['scripts/install-postgres.sh'], none);
  // ava runs the specs through tsx, which strips types without checking them: without this the
  // specs, helpers and scripts could drift from the library's types unnoticed.
  await run('typecheck', 'npx', ['tsc', '-p', 'tsconfig.test.json'], none);
}
if (!only || only === 'js') await run('ava', 'npx', ['ava', '--tap'], parseTap);

for (const b of broken) process.stdout.write(`broken: ${b}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);
