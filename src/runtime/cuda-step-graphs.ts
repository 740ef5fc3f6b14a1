// The CUDA backend's Backend.runGraph policy over the addon's step graphs (native/cuda/cuda-graphs.h): the first
// step of a key runs eagerly (kernel attributes and other lazy set-up happen outside any capture), the second is
// captured and launched, later ones replay it with their own inputs; a replay the addon declines (the step would
// launch differently) is captured again. A capture that fails leaves its key eager for good, and the step runs
// eagerly at once (an input error then surfaces as the op's own error).
import type { Backend } from './backend.js';
import type { NativeCudaContext } from './cuda-addon.js';

type RunGraph = NonNullable<Backend['runGraph']>;

/** runGraph for a context; `on` false (graphs off): every step runs eagerly. */
export function cudaRunGraph(ctx: NativeCudaContext, on: boolean, checkLive: () => void): RunGraph {
  const warmKeys = new Set<string>(); // keys that ran once eagerly (the next one is captured)
  const eagerKeys = new Set<string>(); // keys whose capture failed: always eager
  return (key, inputs, record) => {
    checkLive();
    if (!on || eagerKeys.has(key)) {
      record();
      return 'eager';
    }
    if (ctx.graphReplay(key, inputs)) return 'replayed';
    if (!warmKeys.has(key)) {
      if (warmKeys.size >= 4096) warmKeys.clear();
      warmKeys.add(key);
      record();
      return 'eager';
    }
    if (!ctx.graphBegin(key, inputs)) { // no reserved scratch, op timing on, or the sync mode
      record();
      return 'eager';
    }
    try {
      record();
      ctx.graphEnd();
    } catch {
      ctx.graphAbort(); // nothing of the capture ran
      eagerKeys.add(key);
      record();
      return 'eager';
    }
    return 'captured';
  };
}
