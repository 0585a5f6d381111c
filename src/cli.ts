#!/usr/bin/env -S node --max-semi-space-size=1
/**
 * The clipanion entry: registers the commands and turns every error into one line and an exit
 * code (the table is in errors.ts).
 *
 * The shebang's --max-semi-space-size=1: batches arrive as short-lived buffers owned by native
 * code, which V8 frees only when a young-generation GC runs; its default 16 MB semi-spaces let
 * tens of MB of them pile up on a long run (docs/benchmarks.md has the measurements). It cannot be
 * set once V8 runs, so `node lib/cli.js` works too, only with a higher peak.
 */
import { Builtins, Cli } from 'clipanion';
import { caFileFrom, relaunchTrusting } from './ca-file.js';
import { EXIT_CODES, reportError } from './errors.js';
import { closeAllStreams } from './store/sessions.js';
import { AllCommand } from './commands/all.js';
import { BackupCommand } from './commands/backup.js';
import { ConvertCommand } from './commands/convert.js';
import { writeJsonResult } from './commands/base.js';
import { MergeCommand } from './commands/merge.js';
import { RestoreCommand } from './commands/restore.js';
import { TOOL_VERSION } from './version.js';
import { DeleteDeviceCommand } from './commands/delete-device.js';
import { EnableCommand } from './commands/enable.js';
import { ExtractCommand } from './commands/extract.js';
import { InspectCommand } from './commands/inspect.js';
import { UploadCommand } from './commands/upload.js';
import { VerifyCommand } from './commands/verify.js';


export const COMMANDS = [InspectCommand, BackupCommand, RestoreCommand, ExtractCommand, EnableCommand, UploadCommand, VerifyCommand, AllCommand, DeleteDeviceCommand, ConvertCommand, MergeCommand];

export async function run(argv: string[]): Promise<number> {
  const cli = new Cli({ binaryLabel: 'sled-migration-tool', binaryName: 'sled-migration-tool', binaryVersion: TOOL_VERSION, enableCapture: false });
  for (const command of COMMANDS) cli.register(command);
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);

  try {
    cli.process(argv);
  } catch (e) {
    process.stderr.write(cli.error(e));
    // A Job that reads the result from its log gets one for a mistyped command line too.
    if (argv.includes('--json')) {
      const message = (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
      writeJsonResult(argv.find((a) => !a.startsWith('-')) ?? '', EXIT_CODES.USAGE, {}, { code: 'USAGE', message, fix: 'see `sled-migration-tool --help`' });
    }
    return EXIT_CODES.USAGE;
  }
  // Commands catch their own errors (BaseCommand.execute): one line and a documented exit code.
  return cli.run(argv, { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin });
}

function onSignal(signal: NodeJS.Signals) {
  closeAllStreams();
  process.stderr.write(`\ninterrupted (${signal}); progress so far is recorded, rerun the command to continue\n`);
  process.exit(signal === 'SIGINT' ? EXIT_CODES.INTERRUPTED : 143);
}

async function main(argv: string[]): Promise<number> {
  const caFile = caFileFrom(argv, process.env);
  if (caFile) {
    try {
      const code = await relaunchTrusting(caFile, argv);
      if (code !== undefined) return code;
    } catch (e) {
      return reportError(e);
    }
  }
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const exitCode = await run(argv);
  closeAllStreams();
  return exitCode;
}

process.exitCode = await main(process.argv.slice(2));
