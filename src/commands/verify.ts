import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { EXIT_CODES } from '../errors.js';
import type { Output } from '../log.js';
import { verifyStep, type VerifyReport } from '../steps/verify.js';
import { HomeserverCommand } from './homeserver.js';

export const sampleOption = () =>
  Option.String('--sample', { validator: t.isNumber(), description: 'Check only N keys chosen at random, one request each (the count is always checked in full)' });

export function printReport(out: Output, r: VerifyReport): void {
  out.result(`Server backup version: ${r.version}`);
  out.result(`Keys in backup: ${r.keysInBackup}`);
  out.result(`Keys extracted: ${r.keysInStore}${r.damagedInStore ? ` (${r.damagedInStore} damaged entries not counted)` : ''}`);
  out.result(`Keys checked: ${r.checked}${r.sampled ? ' (random sample)' : ' (every key decrypted and compared)'}`);
  if (r.problem) out.result(`Problem: ${r.problem}`);
  if (r.missingCount) {
    out.result(`Missing from the backup: ${r.missingCount}`);
    for (const m of r.missing) out.result(`  ${m.roomId} ${m.sessionId}`);
  }
  if (r.differentCount) {
    out.result(`Different from the store: ${r.differentCount}`);
    for (const d of r.different) out.result(`  ${d.roomId} ${d.sessionId}: ${d.reason}`);
  }
  out.result(`Status: ${r.complete ? 'COMPLETE' : 'INCOMPLETE'}`);
}

/** `verify`'s part of a `--json` result (also `all`'s): counts and the outcome, never a key. */
export function verifyFields(r: VerifyReport): Record<string, unknown> {
  return {
    backup_version: r.version,
    verify: {
      status: r.complete ? 'COMPLETE' : 'INCOMPLETE',
      keys_in_backup: r.keysInBackup,
      keys_in_store: r.keysInStore,
      damaged_in_store: r.damagedInStore,
      checked: r.checked,
      sampled: r.sampled,
      missing: r.missingCount,
      different: r.differentCount,
      ...(r.problem ? { problem: r.problem } : {}),
    },
  };
}

export class VerifyCommand extends HomeserverCommand {
  static override paths = [['verify']];
  static override locks = ['migration-dir'] as const;
  static override usage = Command.Usage({
    description: 'Prove the backup: decrypt every entry with our key and compare it with the store',
    details: 'Exits 0 only when every key of the store is in the backup and decrypts to the same key.',
  });

  sample = sampleOption();

  protected async perform(): Promise<number> {
    const report = await verifyStep(await this.stepContext(), this.sample);
    printReport(this.out, report);
    this.record(verifyFields(report));
    return report.complete ? 0 : EXIT_CODES.VERIFY_INCOMPLETE;
  }
}
