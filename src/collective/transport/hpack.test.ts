import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeHeaders, HpackDecoder, HpackError, huffmanDecode, huffmanEncode, type HeaderList } from './hpack.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/gu, ''), 'hex');

describe('HPACK (RFC 7541)', () => {
  it('decodes the RFC\'s request examples without Huffman (C.3), the dynamic table carried between blocks', () => {
    const d = new HpackDecoder();
    assert.deepEqual(d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d')), [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/'],
      [':authority', 'www.example.com'],
    ]);
    assert.deepEqual(d.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865')), [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/'],
      [':authority', 'www.example.com'],
      ['cache-control', 'no-cache'],
    ]);
  });

  it('decodes the RFC\'s request examples with Huffman (C.4)', () => {
    const d = new HpackDecoder();
    assert.deepEqual(d.decode(hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff')), [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/'],
      [':authority', 'www.example.com'],
    ]);
    assert.deepEqual(d.decode(hex('8286 84be 5886 a8eb 1064 9cbf')), [
      [':method', 'GET'],
      [':scheme', 'http'],
      [':path', '/'],
      [':authority', 'www.example.com'],
      ['cache-control', 'no-cache'],
    ]);
  });

  it('Huffman-codes every byte value and back; rejects bad padding', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.deepEqual(huffmanDecode(huffmanEncode(all)), all);
    assert.deepEqual(huffmanEncode(Buffer.from('www.example.com')), hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff'));
    // 'a' is 00011 (5 bits): padding with zeros instead of ones is an error.
    assert.throws(() => huffmanDecode(Buffer.from([0b00011000])), HpackError);
    assert.deepEqual(huffmanDecode(Buffer.from([0b00011111])), Buffer.from('a'));
  });

  it('what the encoder writes, a fresh decoder reads back (static names, new names, long values)', () => {
    const h: HeaderList = [
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', '/tas.collective.v1.Collective/Exchange'],
      [':authority', '127.0.0.1:7071'],
      ['content-type', 'application/grpc'],
      ['te', 'trailers'],
      [':status', '200'],
      ['grpc-status', '14'],
      ['grpc-message', 'x'.repeat(300)],
    ];
    assert.deepEqual(new HpackDecoder().decode(encodeHeaders(h)), h);
  });

  it('evicts from the dynamic table by size and honours a table size update', () => {
    const d = new HpackDecoder(64);
    // Literal with incremental indexing, new name "a" = "b" (size 34), twice: the second evicts the first.
    const add = (v: string) => Buffer.concat([Buffer.from([0x40, 1]), Buffer.from('a'), Buffer.from([v.length]), Buffer.from(v)]);
    d.decode(add('b'));
    d.decode(add('c'));
    assert.deepEqual(d.decode(Buffer.from([0x80 | 62])), [['a', 'c']]);
    assert.throws(() => d.decode(Buffer.from([0x80 | 63])), HpackError);
    // Size update to 0 empties the table; over the advertised size is an error.
    d.decode(Buffer.from([0x20]));
    assert.throws(() => d.decode(Buffer.from([0x80 | 62])), HpackError);
    assert.throws(() => d.decode(Buffer.from([0x3f, 0x22])), HpackError);
  });
});
