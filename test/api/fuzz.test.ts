// The whole HTTP contract under a fuzzer: schemathesis (tools/fuzz/) generates requests from
// openapi.yaml for every operation, valid and invalid, JSON and multipart (with real and broken
// images, tools/fuzz/hooks.py), plus methods no path takes, against `npm start` on the
// random-init fixture package (its text is meaningless; the fuzzer checks the contract only).
// No response may be a 5xx or break the schema (status, content type, headers, body, every SSE
// event); a request the schema refuses must be refused. Afterwards the server must
// be healthy, serve a plain request, and have logged no error.
//
// Bounded: a fixed seed and FUZZ_EXAMPLES (default 60) generated cases per operation and phase.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { packageDir } from '../support/golden.js';
import { repoRoot } from './support/harness.js';
import { startServer } from './support/server-process.js';

const SCHEMATHESIS = join(repoRoot, '.venv/bin/schemathesis');
const EXAMPLES = process.env.FUZZ_EXAMPLES ?? '60';

test('schemathesis finds no 5xx and no response outside openapi.yaml', { timeout: 15 * 60_000 }, async () => {
  assert.ok(existsSync(SCHEMATHESIS), `${SCHEMATHESIS} is missing: run npm run setup:python (npm test does)`);
  const server = await startServer(['--model', packageDir('tiny-random-qwen2-siglip')], { LOG_LEVEL: 'info', API_KEYS: '' }, { ready: true });
  const { url, logs } = server;
  const work = mkdtempSync(join(tmpdir(), 'tinyllava-fuzz-'));
  try {
    const args = [
      '--config-file', join(repoRoot, 'tools/fuzz/schemathesis.toml'),
      'run', join(repoRoot, 'openapi.yaml'),
      '--url', url,
      '--phases', 'coverage,fuzzing',
      '--max-examples', EXAMPLES,
      '--seed', '12',
      '--workers', '1',
      '--generation-database', 'none',
      '--request-timeout', '120',
      '--no-color',
      // Valid by the schema is not always servable (template rules, the context, image bytes);
      // the rest need state or auth this server does not have.
      '--exclude-checks', 'positive_data_acceptance,use_after_free,ensure_resource_availability,object_level_authorization,ignored_auth',
    ];
    const run = spawnSync(SCHEMATHESIS, args, {
      cwd: work,
      encoding: 'utf8',
      env: { ...process.env, SCHEMATHESIS_HOOKS: 'hooks', PYTHONPATH: join(repoRoot, 'tools/fuzz') },
      maxBuffer: 64 * 2 ** 20,
    });
    const report = `${run.stdout}\n${run.stderr}`;
    assert.equal(run.status, 0, report.slice(-20_000));
    assert.match(run.stdout, /No issues found/);
    const generated = Number(/(\d+) generated/.exec(run.stdout)?.[1] ?? 0);
    assert.ok(generated > 500, `only ${generated} cases generated`);

    // healthy afterwards
    assert.equal((await fetch(`${url}/health`)).status, 200);
    assert.equal((await fetch(`${url}/ready`)).status, 200);
    const ok = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 }),
    });
    assert.equal(ok.status, 200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.doesNotMatch(metrics, /^tinyllava_request_errors_total\{model_name="[^"]*",type="server_error"/m, 'no 5xx was counted');
    // the fuzzer reached the image decoder and the vision encoder, not only empty forms
    assert.match(metrics, /^tinyllava_request_errors_total\{model_name="tiny-random-qwen2-siglip",type="invalid_request_error",code="invalid_image"\} [1-9]/m);
    assert.match(metrics, /^tinyllava_images_processed_total\{model_name="tiny-random-qwen2-siglip"\} [1-9]/m);
    assert.deepEqual(logs.filter((l) => l.level >= 50), [], 'nothing was logged as an error');
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
});
