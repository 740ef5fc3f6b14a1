// The list of subcommands. Each lives in its own file and exports register<Name>(program).
import type { Command } from 'commander';
import { registerServe } from './serve.js';
import { registerInitModel } from './init-model.js';
import { registerPlan } from './plan.js';
import { registerGenerate } from './generate.js';
import { registerBench } from './bench.js';

export function registerCommands(program: Command): void {
  registerInitModel(program);
  registerGenerate(program);
  registerPlan(program);
  registerServe(program);
  registerBench(program);
}
