// A byte-counting progress bar on stderr (cli-progress) for long weight loads and writes.
// Invariant: a no-op object when disabled, so callers never branch. Must not: write to stdout.
import cliProgress from 'cli-progress';

export interface ByteProgress {
  add(bytes: number): void;
  stop(): void;
}

const GiB = 1024 ** 3;

export function byteProgress(label: string, totalBytes: number, enabled: boolean): ByteProgress {
  if (!enabled) return { add() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done}/{all} GiB | {speed} MiB/s | ETA {eta_formatted}`,
      hideCursor: null,
      fps: 5,
      noTTYOutput: true,
      notTTYSchedule: 5000,
    },
    cliProgress.Presets.legacy,
  );
  const start = Date.now();
  let value = 0;
  const payload = () => ({
    done: (value / GiB).toFixed(2),
    all: (totalBytes / GiB).toFixed(2),
    speed: (value / 1024 ** 2 / Math.max(1e-3, (Date.now() - start) / 1000)).toFixed(0),
  });
  bar.start(totalBytes, 0, payload());
  return {
    add(bytes: number) {
      value += bytes;
      bar.update(value, payload());
    },
    stop() {
      bar.stop();
    },
  };
}
