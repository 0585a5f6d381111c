/**
 * The typed face of the napi binding. Native errors arrive as JSON in the message
 * (`{"code","message","hint"}`, see crates/node/src/errors.rs) and leave here as ToolError.
 */
import { createRequire } from 'node:module';
import { EXIT_CODES, ToolError, type ErrorCode } from '../errors.js';
import type * as Binding from '../../native/index.cjs';

const require = createRequire(import.meta.url);

let loaded: typeof Binding | undefined;

/** Loads the addon on first use, so `--help` works even where no prebuilt binary fits. */
export function native(): typeof Binding {
  if (!loaded) {
    try {
      loaded = require('../../native/index.cjs') as typeof Binding;
    } catch (e) {
      throw new ToolError(
        'INTERNAL',
        `the native addon could not be loaded for ${process.platform}-${process.arch}: ${(e as Error).message.split('\n')[0]}`,
        'install the package that matches this platform (npm installs it as an optional dependency), or build it with `npm run build` from a clone',
      );
    }
  }
  return loaded;
}

/** Turns an error thrown by the binding into a ToolError; anything else passes through. */
export function fromNative(e: unknown): unknown {
  if (!(e instanceof Error) || !e.message.startsWith('{')) return e;
  try {
    const body = JSON.parse(e.message) as { code: string; message: string; hint?: string };
    const code = (body.code in EXIT_CODES ? body.code : 'INTERNAL') as ErrorCode;
    return new ToolError(code, body.message, body.hint);
  } catch {
    return e;
  }
}

export async function call<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw fromNative(e);
  }
}

export type { Binding };
