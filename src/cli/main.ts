// The CLI entry: builds the commander program from one registration function per subcommand and turns
// UserErrors into one line on stderr with exit code 1 (never a stack trace). Owns nothing else.
import { Command } from 'commander';
import { isUserError } from '../errors.js';
import { registerCommands } from './commands.js';

export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program.name('longctx').description('Long-context LLM inference engine and OpenAI-compatible server');
  program.exitOverride();
  registerCommands(program);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') {
      process.exitCode = 0;
      return;
    }
    if (code?.startsWith('commander.')) {
      process.exitCode = 1; // commander already printed its one-line message
      return;
    }
    if (isUserError(e)) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e;
  }
}

await main(process.argv);
