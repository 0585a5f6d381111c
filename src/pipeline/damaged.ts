/**
 * Damaged entries, the same way in every command: strict runs stop at the first with one line
 * naming it and the flag that carries on; --skip-errors runs list them in failed-sessions.json.
 */
import { ToolError } from '../errors.js';
import type { DamagedRecord } from '../store/sessions.js';

/** One element of failed-sessions.json. */
export function damagedJson(d: DamagedRecord) {
  return { position: d.position, key_hex: d.keyHex, kind: d.kind, message: d.message };
}

export function damagedEntryError(d: DamagedRecord, hint: string): ToolError {
  const where = d.keyHex ? `entry ${d.position} (Sled key ${d.keyHex.slice(0, 24)}…)` : `key ${d.position} of the file`;
  return new ToolError('DAMAGED_ENTRIES', `${where} is damaged: ${d.kind}: ${d.message}`, hint);
}
