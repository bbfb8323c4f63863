// `npm start` as a process: bad configuration exits 2 naming the setting; the server listens
// before the model loads, serves, and drains and exits 0 on SIGTERM.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { packageDir } from '../support/golden.js';
import { repoRoot } from './support/harness.js';

const SERVE = join(repoRoot, 'dist/src/cli/serve.js');

interface Running {
  child: ChildProcess;
  logs: Record<string, any>[];
  url: string;
  exited: Promise<number | null>;
}

/** Starts the server on a free port and resolves once it logs where it listens. */
function start(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const child = spawn(process.execPath, [SERVE, '--port', '0', ...args], {
    env: { ...process.env, INTRA_OP_THREADS: '1', VISION_INTRA_OP_THREADS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, any>[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const entry = JSON.parse(line) as Record<string, any>;
        logs.push(entry);
        const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(entry.msg ?? '');
        if (m) resolve({ child, logs, url: m[1], exited });
      }
    });
    void exited.then((code) => reject(new Error(`server exited with ${code} before listening`)));
  });
}

async function until<T>(f: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('npm start', () => {
  test('an invalid setting exits 2 with a message naming it', () => {
    const r = spawnSync(process.execPath, [SERVE], { env: { ...process.env, PORT: 'eighty' }, encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /invalid setting port from PORT \(environment\): must be an integer from 0 to 65535, got "eighty"/);
    const flag = spawnSync(process.execPath, [SERVE, '--max-images', 'many'], { encoding: 'utf8' });
    assert.equal(flag.status, 2);
    assert.match(flag.stderr, /maxImages from --max-images/);
  });

  test('--help lists the settings and exits 0', () => {
    const r = spawnSync(process.execPath, [SERVE, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /--model \(MODEL_DIR, default models\/tiny-random-qwen2-siglip\)/);
  });

  test('listens before the model loads, serves it, drains on SIGTERM and exits 0', async () => {
    const s = await start(['--model', packageDir('tiny-random-qwen2-siglip'), '--served-model-name', 'tiny']);
    try {
      assert.equal((await fetch(`${s.url}/health`)).status, 200);
      await until(async () => ((await fetch(`${s.url}/ready`)).status === 200 ? true : undefined));
      const order = s.logs.map((l) => l.msg as string);
      assert.ok(order.findIndex((m) => m.startsWith('Server listening')) < order.indexOf('model ready'), order.join(' | '));

      const res = await fetch(`${s.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': 'serve-test-1' },
        body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 3 }),
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-request-id'), 'serve-test-1');
      assert.equal(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens <= 3, true);
      assert.ok(s.logs.some((l) => l.reqId === 'serve-test-1'));

      s.child.kill('SIGTERM');
      assert.equal(await s.exited, 0);
      assert.ok(s.logs.some((l) => l.msg === 'draining'));
      assert.equal(s.logs.at(-1)!.msg, 'stopped');
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  test('a model directory that cannot be loaded exits 1 after logging why', async () => {
    const s = await start(['--model', join(repoRoot, 'test/fixtures/images')]);
    assert.equal(await s.exited, 1);
    assert.ok(s.logs.some((l) => l.level === 60 && l.msg === 'the model failed to load'));
  });
});
