import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'lib', 'cli.js');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
