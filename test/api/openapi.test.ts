// openapi.yaml is the contract: the generated TypeScript types must be current, every path it
// lists must be served (and nothing else), and its schemas must compile. (Responses are checked
// against it in the other tests, with assertMatches.)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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

  test('the app serves exactly the documented paths', async () => {
    const doc = openApiSpec().document as unknown as { paths: Record<string, Record<string, unknown>> };
    const t = await startApp();
    try {
      const documented: string[] = [];
      for (const [path, ops] of Object.entries(doc.paths)) {
        for (const method of Object.keys(ops).filter((m) => ['get', 'post', 'put', 'delete', 'patch'].includes(m))) {
          documented.push(`${method.toUpperCase()} ${path}`);
          assert.ok(t.app.hasRoute({ method: method.toUpperCase() as 'GET', url: path }), `${method} ${path} is served`);
        }
      }
      const served = t.app
        .printRoutes({ commonPrefix: false })
        .split('\n')
        .map((l) => /(\/\S*) \(([A-Z, ]+)\)/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .flatMap((m) => m[2].split(', ').filter((x) => x !== 'HEAD').map((method) => `${method} ${m[1]}`));
      assert.deepEqual(served.sort(), documented.sort());
    } finally {
      await t.close();
    }
  });
});
