// Test helper: how many descriptors this process holds on files under a directory (-1 where /proc is
// absent). Counting only a test's own files keeps leak checks exact while the runner and libuv open and
// close descriptors of their own.
import fs from 'node:fs';

export function openFdsUnder(dir: string): number {
  if (!fs.existsSync('/proc/self/fd')) return -1;
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)) n++;
    } catch {
      // closed between readdir and readlink
    }
  }
  return n;
}
