import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopStringMatcher } from '../../src/engine/stop-strings.js';

function feed(stops: string[], chunks: string[]): { out: string[]; stopped: boolean; rest: string } {
  const m = new StopStringMatcher(stops);
  const out: string[] = [];
  let stopped = false;
  for (const c of chunks) {
    const r = m.push(c);
    out.push(r.text);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  return { out, stopped, rest: m.flush() };
}

test('a stop string split across tokens is matched and never emitted', () => {
  const r = feed(['END'], ['the E', 'N', 'D!', 'more']);
  assert.deepEqual(r.out, ['the ', '', '']);
  assert.ok(r.stopped);
  assert.equal(r.rest, '');
});

test('held-back text is released once it can no longer start a stop string', () => {
  const r = feed(['END'], ['the E', 'x', 'EN', 'd']);
  assert.deepEqual(r.out, ['the ', 'Ex', '', 'ENd']);
  assert.ok(!r.stopped);
});

test('flush returns what is held back when generation ends otherwise', () => {
  const r = feed(['\n\nUSER:'], ['Hello.', '\n\n', 'US']);
  assert.deepEqual(r.out, ['Hello.', '', '']);
  assert.equal(r.rest, '\n\nUS');
});

test('earliest of several stop strings wins; a stop inside one chunk cuts it', () => {
  assert.deepEqual(feed(['bb', 'a'], ['xxbba']).out, ['xx']);
  assert.deepEqual(feed(['bb', 'a'], ['xab']).out, ['x']);
  assert.deepEqual(feed(['###'], ['a#', '#', '#b']).out, ['a', '', '']);
  assert.deepEqual(feed(['stop'], ['stop']).out, ['']);
});

test('without stop strings everything passes through; empty stops are ignored', () => {
  assert.deepEqual(feed([], ['a', 'b']).out, ['a', 'b']);
  assert.deepEqual(feed([''], ['a', 'b']).out, ['a', 'b']);
});

test('overlapping prefixes: holds the longest possible start', () => {
  // "aab" could start at index 1 of "aaa"
  const r = feed(['aab'], ['aaa', 'b']);
  assert.deepEqual(r.out, ['a', '']);
  assert.ok(r.stopped);
});

test('non-BMP characters are never split', () => {
  const r = feed(['😀!'], ['x😀', '?']);
  assert.deepEqual(r.out, ['x', '😀?']);
});
