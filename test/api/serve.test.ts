// `npm start` as a process: bad configuration exits 2 naming the setting; the server listens
// before the model loads, serves, and drains and exits 0 on SIGTERM, after the shutdown delay
// when it was ready; a SIGTERM to npm's own PID reaches the server (npm forwards it to node).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { packageDir } from '../support/golden.js';
import { repoRoot } from './support/harness.js';
import { SERVE, startServer, type ServerProcess } from './support/server-process.js';

/** npm itself: the one running this suite, else the one on PATH. */
const NPM = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ['npm'];

/** Starts the server on a free port and resolves once it logs where it listens. */
function start(args: string[], env: NodeJS.ProcessEnv = {}, command?: string[]): Promise<ServerProcess> {
  return startServer(args, env, { command });
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
    assert.match(r.stdout, /--model \(MODEL_DIR, default models\/tinyllava-demo\)/);
  });

  test('listens before the model loads, serves it, drains on SIGTERM and exits 0', async () => {
    const s = await start(['--model', packageDir('tiny-random-qwen2-siglip'), '--served-model-name', 'tiny']);
    try {
      assert.equal((await fetch(`${s.url}/health`)).status, 200);
      await until(async () => ((await fetch(`${s.url}/ready`)).status === 200 ? true : undefined));
      // /ready turns 200 as the engine attaches, a moment before 'model ready' is logged (and read
      // through the pipe): wait for the line itself (seen on CI: the order checked without it).
      await until(async () => (s.logs.some((l) => l.msg === 'model ready') ? true : undefined));
      const order = s.logs.map((l) => l.msg as string);
      assert.ok(order.findIndex((m) => m.startsWith('Server listening')) < order.indexOf('model ready'), order.join(' | '));
      // one line says which runtime runs (the default, native, with its addon built)
      assert.deepEqual(s.logs.filter((l) => /^runtime /.test(l.msg)).map((l) => [l.msg, l.runtime]), [['runtime native', 'native']]);

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

  test('SIGTERM with --shutdown-delay: /ready 503 at once, still serving until the delay ends, then exit 0', async () => {
    const s = await start(['--model', packageDir('tiny-random-qwen2-siglip'), '--shutdown-delay', '1.5']);
    try {
      await until(async () => ((await fetch(`${s.url}/ready`)).status === 200 ? true : undefined));
      const signalled = performance.now();
      s.child.kill('SIGTERM');
      await until(async () => ((await fetch(`${s.url}/ready`)).status === 503 ? true : undefined));
      const res = await fetch(`${s.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 }),
      });
      assert.ok(performance.now() - signalled < 1500, 'answered within the delay');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('connection'), 'close');
      assert.equal(await s.exited, 0);
      assert.ok(performance.now() - signalled >= 1500, 'exited after the delay, not before');
      const msgs = s.logs.map((l) => l.msg as string);
      assert.ok(msgs.indexOf('shutting down: /ready is 503') < msgs.indexOf('draining'), msgs.join(' | '));
      assert.equal(s.logs.find((l) => l.msg === 'shutting down: /ready is 503')!.shutdownDelaySeconds, 1.5);
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  test("a SIGTERM to npm start's PID drains the server: npm forwards it to node and waits for it", async () => {
    const s = await start(['--model', packageDir('tiny-random-qwen2-siglip')], {}, [...NPM, '--silent', 'start', '--']);
    const serverPid = s.logs.find((l) => typeof l.pid === 'number')!.pid as number;
    try {
      assert.notEqual(serverPid, s.child.pid, 'npm runs the server as its child');
      await until(async () => ((await fetch(`${s.url}/ready`)).status === 200 ? true : undefined));
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, 0, 'npm exits 0 once the server has');
      assert.ok(s.logs.some((l) => l.msg === 'draining'));
      assert.equal(s.logs.at(-1)!.msg, 'stopped');
      assert.throws(() => process.kill(serverPid, 0), { code: 'ESRCH' }, 'no orphaned server');
    } finally {
      s.child.kill('SIGKILL');
      try {
        process.kill(serverPid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
  });

  test('a signal repeated within a second (npm forwarding the terminal\'s Ctrl-C) does not cut the drain short', async () => {
    const s = await start(['--model', packageDir('tiny-random-qwen2-siglip')]);
    try {
      await until(async () => ((await fetch(`${s.url}/ready`)).status === 200 ? true : undefined));
      s.child.kill('SIGINT');
      s.child.kill('SIGINT');
      assert.equal(await s.exited, 0);
      assert.ok(!s.logs.some((l) => l.msg === 'second signal: exiting without draining'));
      assert.equal(s.logs.at(-1)!.msg, 'stopped');
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  test('a model directory that cannot be loaded exits 1 after saying why once, without a stack', async () => {
    const dir = join(repoRoot, 'test/fixtures/images');
    const s = await start(['--model', dir]);
    assert.equal(await s.exited, 1);
    const fatal = s.logs.filter((l) => l.level === 60);
    assert.equal(fatal.length, 1, JSON.stringify(fatal));
    assert.equal(fatal[0].msg, `the model failed to load: manifest.json: not found in ${dir}: is it a model package made by \`npm run export\`?`);
    assert.equal(fatal[0].err, undefined, 'no stack trace for a package that cannot be served');
  });

  test('--version prints the name and version and exits 0', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { name: string; version: string };
    const r = spawnSync(process.execPath, [SERVE, '--version'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.equal(r.stdout, `${pkg.name} ${pkg.version}\n`);
  });

  test('a port already taken: exit 1 with one plain line naming the port, no stack trace', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const r = spawnSync(process.execPath, [SERVE, '--port', String(port), '--model', join(repoRoot, 'test/fixtures/images')], {
        encoding: 'utf8',
        env: { ...process.env, LOG_FORMAT: 'json' },
      });
      assert.equal(r.status, 1);
      const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
      const fatal = lines.filter((l) => l.level === 60);
      assert.equal(fatal.length, 1, r.stdout);
      assert.equal(fatal[0].msg, `cannot listen on 127.0.0.1:${port}: the port is already in use (another server running?); stop it or choose another port with --port or PORT`);
      assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at /, 'no stack trace');
      assert.ok(!lines.some((l) => /model/.test(l.msg ?? '')), 'the model is not loaded when the server cannot listen');
    } finally {
      blocker.close();
    }
  });

  test('--log-format pretty writes readable lines, not JSON; a bare boolean flag means true', async () => {
    const child = spawn(process.execPath, [SERVE, '--port', '0', '--log-format', 'pretty', '--allow-remote-images', '--model', join(repoRoot, 'test/fixtures/images')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c))); // all of stdout read
    assert.equal(code, 1, out);
    const lines = out.split('\n').filter((l) => l.trim().length > 0);
    assert.ok(lines.length >= 3, out);
    for (const line of lines.filter((l) => /^\S/.test(l))) assert.throws(() => JSON.parse(line), `not JSON: ${line}`);
    assert.match(out, /INFO.*Server listening at http:\/\/127\.0\.0\.1:\d+/);
    assert.match(out, /FATAL.*the model failed to load: manifest\.json: not found/);
    assert.match(out, /allowRemoteImages: true/);
  });
});
