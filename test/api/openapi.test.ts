// openapi.yaml is the contract: the generated TypeScript types must be current, every path it
// lists must be served (and nothing else), and its schemas must compile. (Responses are checked
// against it in the other tests, with assertMatches.)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openApiSpec } from '../../src/api/openapi.js';
import { repoRoot, startApp } from './support/harness.js';

const TYPES = 'src/api/openapi-types.ts';

describe('openapi.yaml', () => {
  test('src/api/openapi-types.ts is what `npm run gen:types` makes of it now', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const script = pkg.scripts['gen:types'];
    const args = script.split(/\s+/);
    assert.equal(args[0], 'openapi-typescript');
    assert.deepEqual(args.slice(-2), ['-o', TYPES], 'gen:types writes the committed file');
    const dir = mkdtempSync(join(tmpdir(), 'openapi-types-'));
    try {
      const fresh = join(dir, 'openapi-types.ts');
      const cli = join(repoRoot, 'node_modules/openapi-typescript/bin/cli.js');
      execFileSync(process.execPath, [cli, ...args.slice(1, -2), '-o', fresh], { cwd: repoRoot, stdio: 'pipe' });
      assert.equal(readFileSync(join(repoRoot, TYPES), 'utf8'), readFileSync(fresh, 'utf8'), `${TYPES} is stale: run npm run gen:types`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('every schema compiles and every $ref resolves', () => {
    const spec = openApiSpec();
    for (const name of Object.keys(spec.document.components.schemas)) assert.equal(typeof spec.validator(name), 'function', name);
  });

  test('the app serves exactly the documented paths (and, with the chat page on, its files)', async () => {
    const doc = openApiSpec().document as unknown as { paths: Record<string, Record<string, unknown>> };
    const t = await startApp();
    try {
      const documented: string[] = [];
      for (const [path, ops] of Object.entries(doc.paths)) {
        // OpenAPI's /v1/models/{model} is fastify's /v1/models/:model.
        const route = path.replace(/\{([^}]+)\}/g, ':$1');
        for (const method of Object.keys(ops).filter((m) => ['get', 'post', 'put', 'delete', 'patch'].includes(m))) {
          documented.push(`${method.toUpperCase()} ${route}`);
          assert.ok(t.app.hasRoute({ method: method.toUpperCase() as 'GET', url: route }), `${method} ${path} is served`);
        }
      }
      // printRoutes draws a tree: a child line ("│   └── /:model", or "├── health" under the
      // page's "/") continues its parent's path.
      const served: string[] = [];
      const parents: string[] = [];
      for (const line of t.app.printRoutes({ commonPrefix: false }).split('\n')) {
        const m = /^([│ ]*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?/.exec(line);
        if (!m) continue;
        const depth = m[1].length / 4;
        const path = (parents[depth - 1] ?? '') + m[2];
        parents[depth] = path;
        for (const method of (m[3] ?? '').split(', ').filter((x) => x && x !== 'HEAD')) served.push(`${method} ${path}`);
      }
      // The chat page (ui/, on by default) is a client of the API, not part of it.
      const page = ['/', ...readdirSync(join(repoRoot, 'ui')).map((f) => `/${f}`)].map((p) => `GET ${p}`);
      assert.deepEqual(served.sort(), [...documented, ...page].sort());
    } finally {
      await t.close();
    }
  });
});
