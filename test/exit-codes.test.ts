/** docs/exit-codes.md documents exactly the codes src/errors.ts uses. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { EXIT_CODES, exitMeaning } from '../src/errors.js';
import { ROOT } from './helpers/paths.js';

test('every exit code and name in errors.ts is in docs/exit-codes.md, and no other', (t) => {
  const doc = readFileSync(path.join(ROOT, 'docs', 'exit-codes.md'), 'utf8');
  const rows = new Map<number, string[]>();
  for (const m of doc.matchAll(/^\| (\d+) \| ([A-Z_, ]+) \|/gm)) rows.set(Number(m[1]), m[2]!.split(',').map((s) => s.trim()));
  for (const [name, code] of Object.entries(EXIT_CODES)) t.true(rows.get(code)?.includes(name), `${name} (${code}) documented`);
  for (const [code, names] of rows) for (const name of names) t.is<number, number>(EXIT_CODES[name as keyof typeof EXIT_CODES], code, `${name} documented as ${code}`);
});

test('every exit code has a one-line meaning for --json results', (t) => {
  for (const code of new Set(Object.values(EXIT_CODES))) t.notRegex(exitMeaning(code), /see docs/, `exit ${code}`);
});
