// The prefix cache's block keys: positions (an image marker stands for its N features, keyed by
// the image's content), chained so that a key stands for its whole prefix.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IMAGE_MARKER } from '../../src/engine/model-port.js';
import { blockKeys, promptPositionKeys } from '../../src/engine/prefix-hash.js';

test('an image marker is N positions keyed by the image content; an image without a key ends the keys', () => {
  const ids = [1, 2, IMAGE_MARKER, 3, IMAGE_MARKER, 4];
  const keys = promptPositionKeys(ids, ['aa', 'bb'], 3);
  assert.deepEqual(keys, ['t1', 't2', 'iaa.0', 'iaa.1', 'iaa.2', 't3', 'ibb.0', 'ibb.1', 'ibb.2', 't4']);
  assert.deepEqual(promptPositionKeys(ids, ['aa'], 3), keys.slice(0, 6));
  assert.deepEqual(promptPositionKeys(ids, undefined, 3), ['t1', 't2']);
});

test('block keys: full blocks only, chained, so equal blocks after different prefixes differ', () => {
  const a = blockKeys(['t1', 't2', 't3', 't4', 't5'], 2);
  assert.equal(a.length, 2);
  assert.deepEqual(blockKeys(['t1', 't2', 't3', 't4', 't9', 't9'], 2).slice(0, 2), a, 'a shared prefix shares its keys');
  const b = blockKeys(['t0', 't0', 't3', 't4'], 2);
  assert.notEqual(b[1], a[1], 'the same second block after another first one');
  assert.notDeepEqual(blockKeys(['iaa.0', 'iaa.1'], 2), blockKeys(['ibb.0', 'ibb.1'], 2), 'another image');
  assert.deepEqual(blockKeys(['t1'], 2), []);
  assert.equal(new Set([...a, ...b]).size, 4);
  const all = blockKeys(['t1', 't2', 't3', 't4', 't5', 't6', 't7'], 2);
  assert.deepEqual([...a, ...blockKeys(['t5', 't6', 't7'], 2, a[1])], all, 'a chain continued from its last key');
});
