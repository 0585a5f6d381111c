import { createRequire } from 'node:module';

/** The package version, for --version and backup metadata. */
export const TOOL_VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
