// JSON request bodies (and the multipart form's `request` field): parsed with JSON.parse, then
// refused with a 400 naming the place when they carry a `__proto__` key, or a `constructor`
// holding a `prototype` (the keys that poison prototypes once merged into other objects; the
// same rule as fastify's secure-json-parse, whose error would only say "invalid JSON").
//
// The search is a loop over an explicit stack, never recursion: a body nested thousands of
// levels deep is walked as easily as a flat one.

import { ApiError } from './errors.js';

/** Text -> value, or an ApiError: invalid_json (with the parser's reason), or invalid_request at a forbidden key. */
export function parseJsonText(text: string, what = 'the request body', paramPrefix = ''): unknown {
  if (text.trim().length === 0) throw new ApiError('invalid_json', `${what} is empty`, { param: paramPrefix || null });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // V8's reason quotes a piece of the text: for the client, not for the logs.
    throw new ApiError('invalid_json', `${what} is not valid JSON`, { param: paramPrefix || null, quote: `: ${(err as Error).message}` });
  }
  // Cheap test first: nearly every body has neither word anywhere.
  if (text.includes('__proto__') || text.includes('constructor')) {
    const at = forbiddenKeyPath(value);
    if (at !== null) {
      const param = paramPrefix ? (at.startsWith('[') ? paramPrefix + at : `${paramPrefix}.${at}`) : at;
      throw new ApiError('invalid_request', `${param}: keys named "__proto__" (or "constructor" holding "prototype") are not accepted`, { param });
    }
  }
  return value;
}

/** The path (`messages[0].__proto__`) of the first forbidden key, or null. */
export function forbiddenKeyPath(root: unknown): string | null {
  const stack: { value: unknown; path: string }[] = [{ value: root, path: '' }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], path: `${path}[${i}]` });
      continue;
    }
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const child = path ? `${path}.${key}` : key;
      if (key === '__proto__') return child;
      const v = record[key];
      if (key === 'constructor' && v !== null && typeof v === 'object' && Object.hasOwn(v, 'prototype')) return `${child}.prototype`;
      stack.push({ value: v, path: child });
    }
  }
  return null;
}
