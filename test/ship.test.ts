/**
 * What cannot run here (docker build, kubectl) is checked by reading it: the image's final stage
 * runs as a non-root user with the CLI as entrypoint and no build tools; the Kubernetes manifests
 * take the access token from a Secret and never carry one.
 */
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers/paths.js';

interface Stage {
  from: string;
  lines: string[];
}

function stages(dockerfile: string): Stage[] {
  const out: Stage[] = [];
  // join continuation lines, drop comments
  const lines = dockerfile.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const line of lines) {
    if (/^FROM\s/i.test(line)) out.push({ from: line.split(/\s+/)[1]!, lines: [] });
    else out[out.length - 1]?.lines.push(line);
  }
  return out;
}

test('Dockerfile: multi-stage, the final stage is slim, non-root, the CLI as entrypoint, no compiler', (t) => {
  const all = stages(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
  t.true(all.length >= 2, 'a build stage and a final stage');
  const final = all[all.length - 1]!;
  t.regex(final.from, /^node:20-[a-z]+-slim$|^gcr\.io\/distroless\/nodejs20/);
  const user = final.lines.filter((l) => /^USER\s/i.test(l)).pop();
  t.truthy(user);
  t.notRegex(user!, /^USER\s+(root|0)(:|$)/i);
  const entrypoint = final.lines.find((l) => /^ENTRYPOINT\s/i.test(l))!;
  t.regex(entrypoint, /lib\/cli\.js/);
  t.regex(final.lines.join('\n'), /MIGRATION_DIR=\/migration/);
  for (const line of final.lines.filter((l) => /^RUN\s/i.test(l))) t.notRegex(line, /rustup|cargo|apt-get install|gcc|build-essential|npm (ci|install)/, line);
  t.false(final.lines.some((l) => /^COPY\s+(?!--from)/i.test(l)), 'the final stage copies only from the build stage');
  t.regex(all[0]!.lines.join('\n'), /npm run build/);
});

test('Kubernetes manifests: the token from a Secret, never a literal; the bot volume mounted; non-root', (t) => {
  const dir = path.join(ROOT, 'deploy', 'kubernetes');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  t.deepEqual(files.sort(), ['migration-job.yaml', 'migration-pod.yaml']);
  for (const file of files) {
    const text = readFileSync(path.join(dir, file), 'utf8');
    t.regex(text, /name: ACCESS_TOKEN\s+valueFrom: \{ secretKeyRef:/, file);
    t.notRegex(text, /syt_[A-Za-z0-9]/, `${file} holds no token`);
    t.regex(text, /persistentVolumeClaim/, file);
    t.regex(text, /runAsUser: 1000/, file);
    t.regex(text, /MIGRATION_DIR/, file);
  }
  t.regex(readFileSync(path.join(dir, 'migration-job.yaml'), 'utf8'), /never to the Job's log/i);
});
