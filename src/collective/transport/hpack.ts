/**
 * HPACK (RFC 7541), the header compression of HTTP/2, as much as a gRPC endpoint needs:
 * a full decoder (static and dynamic tables, Huffman-coded strings, table size updates:
 * whatever a peer such as nghttp2 or grpc-js sends) and a plain encoder (every field a
 * literal without indexing, names from the static table where it has them, no Huffman),
 * which any decoder accepts and which keeps no state.
 */
import { HUFFMAN_CODES } from './hpack-huffman.js';

export type HeaderList = Array<[name: string, value: string]>;

export class HpackError extends Error {
  override name = 'HpackError';
}

/** RFC 7541 Appendix A (index 1 first). */
const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/** Static index of each name (its first entry), for the encoder. */
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([n], i) => !STATIC_NAME.has(n) && STATIC_NAME.set(n, i + 1));

/** Huffman decoding: code → symbol, one map per code length. */
const HUFFMAN_BY_LENGTH: Array<Map<number, number>> = Array.from({ length: 31 }, () => new Map());
for (let s = 0; s <= 256; s++) HUFFMAN_BY_LENGTH[HUFFMAN_CODES[2 * s + 1]].set(HUFFMAN_CODES[2 * s], s);

/** Decodes a Huffman-coded string (RFC 7541 5.2: padding is at most 7 one-bits, no EOS). */
export function huffmanDecode(b: Uint8Array): Buffer {
  const out: number[] = [];
  let code = 0,
    len = 0;
  for (const byte of b) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      len++;
      const sym = len >= 5 ? HUFFMAN_BY_LENGTH[len].get(code) : undefined;
      if (sym !== undefined) {
        if (sym === 256) throw new HpackError('Huffman string contains EOS');
        out.push(sym);
        code = 0;
        len = 0;
      } else if (len > 30) throw new HpackError('invalid Huffman code');
    }
  }
  if (len > 7 || code !== 2 ** len - 1) throw new HpackError('invalid Huffman padding');
  return Buffer.from(out);
}

/** Huffman-codes a string (the encoder here never does; tests and peers may). */
export function huffmanEncode(b: Uint8Array): Buffer {
  const out: number[] = [];
  let acc = 0,
    bits = 0;
  for (const s of b) {
    const code = HUFFMAN_CODES[2 * s],
      n = HUFFMAN_CODES[2 * s + 1];
    for (let i = n - 1; i >= 0; i--) {
      acc = (acc << 1) | (Math.floor(code / 2 ** i) & 1);
      if (++bits === 8) {
        out.push(acc);
        acc = 0;
        bits = 0;
      }
    }
  }
  if (bits > 0) out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) & 0xff);
  return Buffer.from(out);
}

/** Appends an HPACK integer with an n-bit prefix (RFC 7541 5.1); `first` holds the high bits. */
function pushInt(out: number[], first: number, n: number, v: number): void {
  const max = (1 << n) - 1;
  if (v < max) {
    out.push(first | v);
    return;
  }
  out.push(first | max);
  v -= max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function pushString(out: number[], s: string): void {
  const b = Buffer.from(s, 'latin1');
  pushInt(out, 0, 7, b.length);
  for (const x of b) out.push(x);
}

/**
 * Encodes a header list: each field a literal without indexing (RFC 7541 6.2.2), with the
 * name's static index where there is one; `:method POST`, `:scheme http(s)` and
 * `:status 200` as their static entries.
 */
export function encodeHeaders(headers: HeaderList): Buffer {
  const out: number[] = [];
  for (const [name, value] of headers) {
    const whole = STATIC_TABLE.findIndex(([n, v]) => n === name && v === value && v !== '');
    if (whole >= 0) {
      pushInt(out, 0x80, 7, whole + 1);
      continue;
    }
    const idx = STATIC_NAME.get(name);
    if (idx !== undefined) pushInt(out, 0x00, 4, idx);
    else {
      out.push(0x00);
      pushString(out, name);
    }
    pushString(out, value);
  }
  return Buffer.from(out);
}

/** An HPACK decoding context (one per connection direction: it holds the dynamic table). */
export class HpackDecoder {
  /** Newest first. */
  private readonly dynamic: Array<[string, string]> = [];
  private size = 0;

  /** `maxTableSize`: what we advertised (SETTINGS_HEADER_TABLE_SIZE, default 4096). */
  constructor(private maxTableSize = 4096) {}

  decode(b: Uint8Array): HeaderList {
    const out: HeaderList = [];
    let i = 0;
    const int = (n: number): number => {
      if (i >= b.length) throw new HpackError('truncated header block');
      const max = (1 << n) - 1;
      let v = b[i++] & max;
      if (v < max) return v;
      let m = 1;
      for (;;) {
        if (i >= b.length) throw new HpackError('truncated integer');
        const x = b[i++];
        v += (x & 127) * m;
        m *= 128;
        if (v > 0x7fffffff) throw new HpackError('integer overflow');
        if ((x & 128) === 0) return v;
      }
    };
    const str = (): string => {
      if (i >= b.length) throw new HpackError('truncated header block');
      const huff = (b[i] & 0x80) !== 0;
      const len = int(7);
      if (i + len > b.length) throw new HpackError('truncated string');
      const raw = b.subarray(i, i + len);
      i += len;
      return (huff ? huffmanDecode(raw) : Buffer.from(raw)).toString('latin1');
    };
    let fields = 0;
    while (i < b.length) {
      const x = b[i];
      if (x & 0x80) {
        out.push(this.entry(int(7)));
        fields++;
      } else if (x & 0x40) {
        const idx = int(6);
        const name = idx === 0 ? str() : this.entry(idx)[0];
        const value = str();
        out.push([name, value]);
        this.insert(name, value);
        fields++;
      } else if (x & 0x20) {
        if (fields > 0) throw new HpackError('table size update after a header field');
        const size = int(5);
        if (size > this.maxTableSize) throw new HpackError(`table size ${size} over the advertised ${this.maxTableSize}`);
        this.maxTableSize = size;
        this.evict(0);
      } else {
        const idx = int(4);
        const name = idx === 0 ? str() : this.entry(idx)[0];
        out.push([name, str()]);
        fields++;
      }
    }
    return out;
  }

  private entry(idx: number): [string, string] {
    if (idx >= 1 && idx <= STATIC_TABLE.length) return [...STATIC_TABLE[idx - 1]] as [string, string];
    const d = this.dynamic[idx - STATIC_TABLE.length - 1];
    if (!d) throw new HpackError(`header index ${idx} out of range`);
    return d;
  }

  private insert(name: string, value: string): void {
    const sz = name.length + value.length + 32;
    this.evict(sz);
    if (sz <= this.maxTableSize) {
      this.dynamic.unshift([name, value]);
      this.size += sz;
    }
  }

  /** Evicts until `room` more bytes fit. */
  private evict(room: number): void {
    while (this.dynamic.length > 0 && this.size + room > this.maxTableSize) {
      const [n, v] = this.dynamic.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}
