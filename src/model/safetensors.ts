// Our own reader and streaming writer of the safetensors format: u64 little-endian header length N,
// N bytes of JSON header ({name: {dtype, shape, data_offsets}}, optional "__metadata__"), then the data.
// Invariant: a SafetensorsFile that opened has a fully validated header (known dtypes, sizes that match
// shapes, offsets inside the data section, no overlaps); every problem is one UserError naming the file
// and the tensor. Must not: read a whole file into memory, or leave a file descriptor open after a failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.js';
import { makeTensor, numel, type DType, type Tensor } from '../runtime/tensor.js';

/** Bytes per element of every dtype the format defines (we validate all, load BF16/F16/F32). */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** The safetensors dtypes we load, and the host dtype each becomes. */
export const LOADABLE_DTYPES: Readonly<Record<string, DType>> = { BF16: 'bf16', F16: 'f16', F32: 'f32' };
export const SAFETENSORS_DTYPE: Readonly<Record<DType, string>> = { bf16: 'BF16', f16: 'F16', f32: 'F32' };

export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const READ_CHUNK_BYTES = 256 * 1024 * 1024; // one readSync call; well under the 2 GiB per-call limit

export interface TensorInfo {
  name: string;
  dtype: string; // safetensors dtype, e.g. "BF16"
  shape: number[];
  begin: number; // absolute byte offset in the file
  byteLength: number;
}

export interface SafetensorsHeader {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>; // in header order
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a header's JSON text. `dataStart` is the absolute offset of the data section (8 + N) and
 * `dataBytes` its length; offsets in the header are relative to dataStart.
 */
export function parseSafetensorsHeader(text: string, dataStart: number, dataBytes: number, file: string): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: safetensors header is not valid JSON (${(e as Error).message}): the file is corrupt or not a safetensors file`);
  }
  if (!isObject(json)) throw new UserError(`${file}: safetensors header must be a JSON object, got ${show(json)}`);
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === 'string')) {
        throw new UserError(`${file}: safetensors "__metadata__" must map strings to strings, got ${show(entry)}`);
      }
      Object.assign(metadata, entry);
      continue;
    }
    const where = `${file}: tensor ${name}`;
    if (!isObject(entry)) throw new UserError(`${where}: header entry must be an object {dtype, shape, data_offsets}, got ${show(entry)}`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string' || DTYPE_BYTES[dtype] === undefined) {
      throw new UserError(`${where}: unknown dtype ${show(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw new UserError(`${where}: shape must be a list of non-negative integers, got ${show(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw new UserError(`${where}: data_offsets must be two non-negative integers [begin, end], got ${show(offsets)}`);
    }
    const [b, e] = offsets as number[];
    if (b > e) throw new UserError(`${where}: data_offsets begin ${b} > end ${e}`);
    if (e > dataBytes) {
      throw new UserError(`${where}: data ends at byte ${e} but the data section has only ${dataBytes} bytes (truncated file?)`);
    }
    const n = numel(shape as number[]);
    const expected = n * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected) || expected !== e - b) {
      throw new UserError(`${where}: has ${e - b} bytes but shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${expected}`);
    }
    tensors.set(name, { name, dtype, shape: [...(shape as number[])], begin: dataStart + b, byteLength: e - b });
  }
  const byStart = [...tensors.values()].filter((t) => t.byteLength > 0).sort((x, y) => x.begin - y.begin);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    if (byStart[i].begin < prev.begin + prev.byteLength) {
      throw new UserError(`${file}: tensors ${prev.name} and ${byStart[i].name} overlap in the data section: the file is corrupt`);
    }
  }
  return { metadata, tensors };
}

/** Reads exactly dest.byteLength bytes at `position`, in bounded chunks. */
function preadExact(fd: number, dest: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < dest.byteLength) {
    const len = Math.min(READ_CHUNK_BYTES, dest.byteLength - done);
    const n = fs.readSync(fd, dest, done, len, position + done);
    if (n === 0) throw new UserError(`${file}: ${what}: unexpected end of file (truncated or changed while reading?)`);
    done += n;
  }
}

/** An open safetensors file with a validated header. Close it (close() is idempotent). */
export class SafetensorsFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly fileBytes: number,
    readonly header: SafetensorsHeader,
  ) {
    this.fd = fd;
  }

  static open(file: string): SafetensorsFile {
    if (os.endianness() !== 'LE') throw new UserError('safetensors loading needs a little-endian host');
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UserError(code === 'ENOENT' ? `${file} not found` : `${file}: cannot open (${code ?? String(e)})`);
    }
    try {
      const stat = fs.fstatSync(fd);
      if (!stat.isFile()) throw new UserError(`${file}: not a regular file`);
      const size = stat.size;
      if (size < 8) throw new UserError(`${file}: only ${size} bytes: too short to be a safetensors file`);
      const lenBuf = new Uint8Array(8);
      preadExact(fd, lenBuf, 0, file, 'header length');
      const n = new DataView(lenBuf.buffer).getBigUint64(0, true);
      if (n < 2n || n > BigInt(MAX_HEADER_BYTES) || n > BigInt(size - 8)) {
        throw new UserError(
          `${file}: safetensors header length ${n} is impossible (must be 2..${Math.min(MAX_HEADER_BYTES, size - 8)} for this ${size}-byte file): not a safetensors file, or truncated`,
        );
      }
      const headerBytes = new Uint8Array(Number(n));
      preadExact(fd, headerBytes, 8, file, 'header');
      const text = new TextDecoder('utf-8', { fatal: false }).decode(headerBytes);
      const dataStart = 8 + Number(n);
      const header = parseSafetensorsHeader(text, dataStart, size - dataStart, file);
      return new SafetensorsFile(file, fd, size, header);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  get(name: string): TensorInfo | undefined {
    return this.header.tensors.get(name);
  }

  private info(name: string): TensorInfo {
    const t = this.header.tensors.get(name);
    if (!t) throw new UserError(`${this.path}: tensor ${name} not found`);
    return t;
  }

  private openFd(): number {
    if (this.fd === null) throw new Error(`${this.path}: read after close`);
    return this.fd;
  }

  /** Copies a tensor's raw little-endian bytes into dest (dest.byteLength must equal the tensor's). */
  readInto(name: string, dest: Uint8Array): void {
    const t = this.info(name);
    if (dest.byteLength !== t.byteLength) throw new Error(`readInto ${name}: destination has ${dest.byteLength} bytes, tensor has ${t.byteLength}`);
    preadExact(this.openFd(), dest, t.begin, this.path, `tensor ${name}`);
  }

  /** Reads a BF16 / F16 / F32 tensor into a host Tensor (16-bit types as raw bits). */
  readTensor(name: string): Tensor {
    const t = this.info(name);
    const dtype = LOADABLE_DTYPES[t.dtype];
    if (!dtype) {
      throw new UserError(`${this.path}: tensor ${name} has dtype ${t.dtype}, which longctx cannot load (supported: BF16, F16, F32)`);
    }
    const n = numel(t.shape);
    const data = dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    this.readInto(name, new Uint8Array(data.buffer, 0, t.byteLength));
    return makeTensor(dtype, t.shape, data);
  }

  close(): void {
    if (this.fd !== null) {
      const fd = this.fd;
      this.fd = null;
      fs.closeSync(fd);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Writer

/**
 * A tensor's bytes: a typed array, or a function producing its bytes in order, chunk by chunk. The writer
 * keeps one chunk in flight while the next is produced, so a producer that recycles buffers must
 * alternate between (at least) two: a yielded chunk must stay untouched until the next one is yielded.
 */
export type TensorBytes = ArrayBufferView | (() => Iterable<ArrayBufferView> | AsyncIterable<ArrayBufferView>);

export interface TensorToWrite {
  name: string;
  dtype: string; // safetensors dtype, e.g. "BF16"
  shape: readonly number[];
  data: TensorBytes;
}

export interface WriteOptions {
  /** Called after each chunk is written with the number of data bytes just written. */
  onProgress?: (bytes: number) => void;
}

/** Builds the padded header (8-byte length prefix included) for tensors laid out in the given order. */
export function encodeSafetensorsHeader(
  tensors: readonly Pick<TensorToWrite, 'name' | 'dtype' | 'shape'>[],
  metadata?: Record<string, string>,
): { bytes: Uint8Array; dataBytes: number } {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(header, t.name)) {
      throw new Error(`writeSafetensors: duplicate or reserved tensor name ${t.name}`);
    }
    const size = DTYPE_BYTES[t.dtype];
    if (size === undefined) throw new Error(`writeSafetensors: unknown dtype ${t.dtype} for ${t.name}`);
    const len = numel(t.shape) * size;
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + len] };
    offset += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.byteLength) / 8) * 8 - 8; // data starts 8-byte aligned
  const bytes = new Uint8Array(8 + padded).fill(0x20);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(json, 8);
  return { bytes, dataBytes: offset };
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * Writes a safetensors file tensor by tensor: one chunk is written (on libuv's thread pool) while the next
 * is produced, and at most those two are in memory. Writes to a temporary name beside `file` and renames
 * it into place on success, so a failure leaves no partial file. Returns the file's size in bytes.
 */
export async function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
  opts: WriteOptions = {},
): Promise<number> {
  const { bytes: header, dataBytes } = encodeSafetensorsHeader(tensors, metadata);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  const fh = await fs.promises.open(tmp, 'w');
  const writeAt = async (bytes: Uint8Array, at: number): Promise<void> => {
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done, at + done);
      done += bytesWritten;
    }
  };
  let pending: Promise<void> = writeAt(header, 0);
  let position = header.byteLength;
  let ok = false;
  try {
    for (const t of tensors) {
      const want = numel(t.shape) * DTYPE_BYTES[t.dtype];
      let got = 0;
      const chunks = ArrayBuffer.isView(t.data) ? [t.data] : t.data();
      for await (const chunk of chunks) {
        await pending; // the previous chunk is on disk, so its buffer may be reused by the producer
        pending = writeAt(bytesOf(chunk), position).then(() => opts.onProgress?.(chunk.byteLength));
        position += chunk.byteLength;
        got += chunk.byteLength;
      }
      if (got !== want) throw new Error(`writeSafetensors ${file}: tensor ${t.name} produced ${got} bytes, its shape needs ${want}`);
    }
    await pending;
    await fh.close();
    ok = true;
    fs.renameSync(tmp, file);
  } finally {
    if (!ok) {
      await pending.catch(() => undefined);
      await fh.close().catch(() => undefined);
      fs.rmSync(tmp, { force: true });
    }
  }
  return header.byteLength + dataBytes;
}

// ------------------------------------------------------------------------------------------------
// Index of a sharded checkpoint: model.safetensors.index.json

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

export interface SafetensorsIndex {
  totalSize: number | null; // metadata.total_size (bytes of tensor data over all shards), when present
  weightMap: Map<string, string>; // tensor name -> shard file name (a plain file name in the same directory)
}

export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}

export function readSafetensorsIndex(file: string): SafetensorsIndex {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code) throw new UserError(`${file}: cannot read (${code})`);
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(json) || !isObject(json.weight_map)) {
    throw new UserError(`${file}: must be an object with "weight_map": {tensor name: shard file}`);
  }
  let totalSize: number | null = null;
  if (isObject(json.metadata) && json.metadata.total_size !== undefined) {
    if (!isNonNegInt(json.metadata.total_size)) {
      throw new UserError(`${file}: "metadata.total_size" must be a non-negative integer, got ${show(json.metadata.total_size)}`);
    }
    totalSize = json.metadata.total_size;
  }
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(json.weight_map)) {
    if (typeof shard !== 'string' || shard === '' || shard === '.' || shard === '..' || path.basename(shard) !== shard || shard.includes('\\')) {
      throw new UserError(`${file}: tensor ${name} maps to ${show(shard)}: shard names must be plain file names in the same directory`);
    }
    weightMap.set(name, shard);
  }
  return { totalSize, weightMap };
}

export function writeSafetensorsIndex(file: string, totalSize: number, weightMap: ReadonlyMap<string, string>): void {
  const json = { metadata: { total_size: totalSize }, weight_map: Object.fromEntries(weightMap) };
  fs.writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
}
