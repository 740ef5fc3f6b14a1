// safetensors: writer/reader round trip (typed arrays, chunk generators, async iterables), the index
// file, and every corrupt-file case producing a one-line UserError naming the file (and the tensor),
// without leaking file descriptors.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { UserError } from '../../src/errors.js';
import {
  readSafetensorsIndex,
  SafetensorsFile,
  writeSafetensors,
  writeSafetensorsIndex,
} from '../../src/model/safetensors.js';
import { f32ToBf16, f32ToF16 } from '../../src/runtime/tensor.js';
import { openFdsUnder } from '../helpers/fds.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-st-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const openFds = (): number => openFdsUnder(tmp);

function throwsUser(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `message must be one line: ${e.message}`);
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" should include "${p}"`);
    return true;
  });
}

/** A file with an arbitrary header (object or raw text), data bytes and optional forced header length. */
function rawFile(name: string, header: unknown, data = new Uint8Array(0), lenOverride?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = new TextEncoder().encode(text);
  const buf = new Uint8Array(8 + h.length + data.length);
  new DataView(buf.buffer).setBigUint64(0, lenOverride ?? BigInt(h.length), true);
  buf.set(h, 8);
  buf.set(data, 8 + h.length);
  const file = path.join(tmp, name);
  fs.writeFileSync(file, buf);
  return file;
}

describe('safetensors round trip', () => {
  it('writes and reads BF16, F16, F32 and empty tensors with metadata, 8-byte aligned', async () => {
    const f32 = Float32Array.from({ length: 6 }, (_, i) => i * 0.5 - 1);
    const bf16 = Uint16Array.from([1.5, -2, 0.25, 3], f32ToBf16);
    const f16 = Uint16Array.from([0.1, 65504, -7], f32ToF16);
    const file = path.join(tmp, 'rt.safetensors');
    const size = await writeSafetensors(
      file,
      [
        { name: 'a.f32', dtype: 'F32', shape: [2, 3], data: f32 },
        { name: 'b.bf16', dtype: 'BF16', shape: [4], data: bf16 },
        { name: 'c.f16', dtype: 'F16', shape: [3, 1], data: f16 },
        { name: 'd.empty', dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
      ],
      { format: 'pt', note: 'ünïcode' },
    );
    assert.equal(fs.statSync(file).size, size);
    const headerLen = Number(fs.readFileSync(file).readBigUInt64LE(0));
    assert.equal((8 + headerLen) % 8, 0);
    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.metadata, { format: 'pt', note: 'ünïcode' });
      assert.deepEqual(st.names(), ['a.f32', 'b.bf16', 'c.f16', 'd.empty']);
      const a = st.readTensor('a.f32');
      assert.equal(a.dtype, 'f32');
      assert.deepEqual(a.shape, [2, 3]);
      assert.deepEqual(a.data, f32);
      const b = st.readTensor('b.bf16');
      assert.equal(b.dtype, 'bf16');
      assert.deepEqual(b.data, bf16);
      assert.deepEqual(st.readTensor('c.f16').data, f16);
      assert.equal(st.readTensor('d.empty').data.length, 0);
    } finally {
      st.close();
    }
    st.close(); // idempotent
  });

  it('streams tensor bytes from generators and async iterables and rejects short producers', async () => {
    const file = path.join(tmp, 'stream.safetensors');
    const values = Float32Array.from({ length: 10 }, (_, i) => i);
    await writeSafetensors(file, [
      {
        name: 'gen',
        dtype: 'F32',
        shape: [10],
        data: function* () {
          yield values.subarray(0, 3);
          yield values.subarray(3);
        },
      },
      {
        name: 'async',
        dtype: 'BF16',
        shape: [2, 2],
        data: async function* () {
          yield Uint16Array.from([1, 2]);
          await new Promise((r) => setTimeout(r, 1));
          yield Uint16Array.from([3, 4]);
        },
      },
    ]);
    const st = SafetensorsFile.open(file);
    assert.deepEqual(st.readTensor('gen').data, values);
    assert.deepEqual(st.readTensor('async').data, Uint16Array.from([1, 2, 3, 4]));
    st.close();

    const bad = path.join(tmp, 'short.safetensors');
    await assert.rejects(
      writeSafetensors(bad, [{ name: 't', dtype: 'F32', shape: [4], data: () => [new Float32Array(3)] }]),
      /tensor t produced 12 bytes, its shape needs 16/,
    );
    assert.equal(fs.existsSync(bad), false, 'a failed write leaves no file');
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
  });

  it('reads and writes model.safetensors.index.json', () => {
    const file = path.join(tmp, 'model.safetensors.index.json');
    writeSafetensorsIndex(file, 1234, new Map([['a', 'model-00001-of-00002.safetensors'], ['b', 'model-00002-of-00002.safetensors']]));
    const idx = readSafetensorsIndex(file);
    assert.equal(idx.totalSize, 1234);
    assert.equal(idx.weightMap.get('b'), 'model-00002-of-00002.safetensors');
    fs.writeFileSync(file, JSON.stringify({ weight_map: { a: '../../etc/passwd' } }));
    throwsUser(() => readSafetensorsIndex(file), file, 'tensor a', 'plain file names');
    fs.writeFileSync(file, JSON.stringify({ metadata: {} }));
    throwsUser(() => readSafetensorsIndex(file), file, 'weight_map');
    fs.writeFileSync(file, '{');
    throwsUser(() => readSafetensorsIndex(file), file, 'not valid JSON');
  });
});

describe('safetensors corrupt files', () => {
  const entry = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });
  const fdsBefore = openFds();

  it('rejects an absurd, tiny or too-long header length', () => {
    const big = rawFile('absurd.safetensors', {}, new Uint8Array(8), 1n << 40n);
    throwsUser(() => SafetensorsFile.open(big), big, 'header length 1099511627776 is impossible');
    const one = rawFile('one.safetensors', '{', new Uint8Array(0), 1n);
    throwsUser(() => SafetensorsFile.open(one), one, 'header length 1 is impossible');
    const longer = rawFile('longer.safetensors', '{}', new Uint8Array(0), 500n);
    throwsUser(() => SafetensorsFile.open(longer), longer, 'header length 500 is impossible');
    const short = path.join(tmp, 'short4.safetensors');
    fs.writeFileSync(short, new Uint8Array(4));
    throwsUser(() => SafetensorsFile.open(short), short, 'too short');
  });

  it('rejects a header that is not JSON or has the wrong shape', () => {
    const notJson = rawFile('notjson.safetensors', 'this is not json');
    throwsUser(() => SafetensorsFile.open(notJson), notJson, 'not valid JSON');
    const arr = rawFile('array.safetensors', [1, 2]);
    throwsUser(() => SafetensorsFile.open(arr), arr, 'must be a JSON object');
    const notObj = rawFile('entry.safetensors', { w: 5 });
    throwsUser(() => SafetensorsFile.open(notObj), notObj, 'tensor w', 'object');
    const meta = rawFile('meta.safetensors', { __metadata__: { a: 1 } });
    throwsUser(() => SafetensorsFile.open(meta), meta, '__metadata__');
    const shape = rawFile('shape.safetensors', { w: entry('F32', [-1, 2], [0, 0]) });
    throwsUser(() => SafetensorsFile.open(shape), shape, 'tensor w', 'shape');
    const offs = rawFile('offs.safetensors', { w: entry('F32', [1], [0, 4, 8]) }, new Uint8Array(8));
    throwsUser(() => SafetensorsFile.open(offs), offs, 'tensor w', 'data_offsets');
  });

  it('rejects an unknown dtype, and refuses to load a known but unsupported one', () => {
    const unk = rawFile('dtype.safetensors', { w: entry('Q4_K', [4], [0, 4]) }, new Uint8Array(4));
    throwsUser(() => SafetensorsFile.open(unk), unk, 'tensor w', 'unknown dtype "Q4_K"');
    const i64 = rawFile('i64.safetensors', { ids: entry('I64', [2], [0, 16]) }, new Uint8Array(16));
    const st = SafetensorsFile.open(i64);
    try {
      throwsUser(() => st.readTensor('ids'), i64, 'tensor ids', 'dtype I64', 'BF16, F16, F32');
    } finally {
      st.close();
    }
  });

  it('rejects offsets past the end, begin > end, and byte counts that do not match the shape', () => {
    const past = rawFile('past.safetensors', { w: entry('F32', [4], [0, 16]) }, new Uint8Array(8));
    throwsUser(() => SafetensorsFile.open(past), past, 'tensor w', 'data section has only 8 bytes');
    const rev = rawFile('rev.safetensors', { w: entry('F32', [1], [8, 4]) }, new Uint8Array(8));
    throwsUser(() => SafetensorsFile.open(rev), rev, 'tensor w', 'begin 8 > end 4');
    const count = rawFile('count.safetensors', { w: entry('BF16', [3, 2], [0, 8]) }, new Uint8Array(8));
    throwsUser(() => SafetensorsFile.open(count), count, 'tensor w', 'has 8 bytes but shape [3, 2] of BF16 needs 12');
  });

  it('rejects overlapping tensors', () => {
    const file = rawFile('overlap.safetensors', { a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, new Uint8Array(12));
    throwsUser(() => SafetensorsFile.open(file), file, 'tensors a and b overlap');
  });

  it('rejects a truncated file', async () => {
    const file = path.join(tmp, 'trunc.safetensors');
    await writeSafetensors(file, [
      { name: 'x', dtype: 'F32', shape: [16], data: new Float32Array(16) },
      { name: 'y', dtype: 'F32', shape: [16], data: new Float32Array(16) },
    ]);
    fs.truncateSync(file, fs.statSync(file).size - 10);
    throwsUser(() => SafetensorsFile.open(file), file, 'tensor y', 'truncated');
    fs.truncateSync(file, 20);
    throwsUser(() => SafetensorsFile.open(file), file, 'header length');
  });

  it('names a missing file and leaks no descriptors on any failure', () => {
    const missing = path.join(tmp, 'missing.safetensors');
    throwsUser(() => SafetensorsFile.open(missing), `${missing} not found`);
    if (fdsBefore >= 0) assert.equal(openFds(), fdsBefore);
  });
});
