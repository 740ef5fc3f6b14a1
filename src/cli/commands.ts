// The list of subcommands. Each lives in its own file and exports register<Name>(program).
import type { Command } from 'commander';

export function registerCommands(program: Command): void {
  void program;
}
