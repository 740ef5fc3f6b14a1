// `longctx bench` without the server stack (the GPU machine's carry holds only what the engine imports).
import { Command } from 'commander';
import { registerBench } from '../../src/cli/bench.js';

const program = new Command('longctx');
registerBench(program);
await program.parseAsync(process.argv);
