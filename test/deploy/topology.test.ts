// The shipped topology of deploy/ on loopback: the server's replicas (plain node processes, with
// deploy/compose.yaml's SHUTDOWN_DELAY and DRAIN_TIMEOUT) behind nginx and behind HAProxy with
// deploy/'s configs (only their addresses rewritten), scraped by Prometheus with deploy/'s scrape
// config and alert rules. Under a steady load of streaming image requests, each replica is
// restarted in turn (SIGTERM, wait for exit 0, start again, wait until the load balancer sends
// it requests again): no client may see an error, and every stream completes. Then every
// PromQL expression of the Grafana dashboard and of the alert rules is evaluated through
// Prometheus' HTTP API, and promtool checks the rules and a replica's /metrics.
//
// Needs nginx, HAProxy and Prometheus (Debian packages, installed by tools/deploy/setup-tools.sh
// as root); about 1.5 minutes.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { runLoad, type LoadResult } from './support/load.js';
import { freePort, Program, Replica, setupTools, status, until } from './support/processes.js';
import { alertQueries, composeReplicaEnv, dashboardQueries, deployDir, haproxyCfg, nginxConf, prometheusYml, shippedReplicaCount } from './support/shipped-configs.js';

const missing = setupTools('topology');
const CONCURRENCY = 4;

/** Sum of one counter's samples over its label sets, from Prometheus text. */
function counterSum(text: string, name: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

interface PromResponse {
  status: string;
  error?: string;
  data: any;
}

describe('the shipped topology on loopback (nginx, HAProxy, Prometheus)', { skip: missing ?? false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tinyllava-topology-'));
  const programs: Program[] = [];
  const replicas: Replica[] = [];
  let promUrl = '';
  let failed = false;
  const env = composeReplicaEnv();

  before(async () => {
    chmodSync(dir, 0o755); // nginx's workers (nobody) write request bodies under it
    const n = shippedReplicaCount();
    for (let i = 1; i <= n; i++) {
      replicas.push(new Replica(`replica-${i}`, await freePort(), { SHUTDOWN_DELAY: env.SHUTDOWN_DELAY, DRAIN_TIMEOUT: env.DRAIN_TIMEOUT }, dir));
    }
    for (const r of replicas) r.start();
    const promPort = await freePort();
    writeFileSync(join(dir, 'prometheus.yml'), prometheusYml(replicas.map((r) => r.port)));
    mkdirSync(join(dir, 'tsdb'));
    programs.push(
      Program.start('prometheus', 'prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'], join(dir, 'prometheus.log')),
    );
    promUrl = `http://127.0.0.1:${promPort}`;
    await Promise.all(replicas.map((r) => r.ready()));
    await until('prometheus /-/ready', async () => (await status(`${promUrl}/-/ready`)) === 200);
  });

  after(() => {
    for (const p of [...programs, ...replicas.map((r) => r.program!)]) p?.kill();
    if (failed) for (const p of [...programs, ...replicas.map((r) => r.program!)]) if (p) console.log(p.tail());
    else rmSync(dir, { recursive: true, force: true });
  });

  /** Restarts each replica in turn under load through `lbUrl`; returns what the clients saw. */
  async function rollingRestart(t: TestContext, lbUrl: string): Promise<LoadResult> {
    let stop = false;
    const load = runLoad(lbUrl, { concurrency: CONCURRENCY, stop: () => stop, maxRequests: 20_000 });
    const exitCodes: (number | null)[] = [];
    try {
      await sleep(2000);
      for (const r of replicas) {
        exitCodes.push(await r.stop());
        r.start();
        await r.ready();
        // Back in rotation: the load balancer sends it requests again (a fresh process counts from 0).
        await until(`${r.name} serving through the load balancer`, async () => counterSum(await (await fetch(`${r.url}/metrics`)).text(), 'tinyllava_request_success_total') > 0, 60_000, 200);
      }
      await sleep(2000);
    } finally {
      stop = true;
    }
    const result = await load;
    t.diagnostic(`${result.sent} requests sent, ${result.completed} streams completed, ${result.failures.length} errors seen; exit codes ${exitCodes.join(', ')}`);
    assert.deepEqual(exitCodes, replicas.map(() => 0), 'every replica drained and exited 0 on SIGTERM');
    assert.deepEqual(result.failures.slice(0, 10), [], `${result.failures.length} of ${result.sent} requests failed`);
    assert.equal(result.completed, result.sent);
    assert.ok(result.completed >= replicas.length * CONCURRENCY, `only ${result.completed} requests`);
    return result;
  }

  test('behind nginx: restarting each replica in turn under load, no client sees an error', async (t) => {
    try {
      const port = await freePort();
      const prefix = join(dir, 'nginx');
      mkdirSync(prefix);
      chmodSync(prefix, 0o755);
      writeFileSync(join(prefix, 'nginx.conf'), nginxConf(replicas.map((r) => r.port), port));
      // Output to a file: the access log is /dev/stdout, which cannot be opened on a pipe.
      const checkLog = join(dir, 'nginx-t.log');
      const fd = openSync(checkLog, 'w');
      const check = spawnSync('nginx', ['-t', '-e', 'stderr', '-p', `${prefix}/`, '-c', join(prefix, 'nginx.conf'), '-g', `pid ${prefix}/nginx.pid;`], { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      assert.equal(check.status, 0, readFileSync(checkLog, 'utf8'));
      const nginx = Program.start('nginx', 'nginx', ['-e', 'stderr', '-p', `${prefix}/`, '-c', join(prefix, 'nginx.conf'), '-g', `daemon off; pid ${prefix}/nginx.pid;`], join(dir, 'nginx.log'));
      programs.push(nginx);
      const url = `http://127.0.0.1:${port}`;
      await until('nginx', async () => (await status(`${url}/ready`)) === 200);
      await rollingRestart(t, url);
      assert.equal(await nginx.stop(), 0);
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  test('behind HAProxy: restarting each replica in turn under load, no client sees an error', async (t) => {
    try {
      const port = await freePort();
      writeFileSync(join(dir, 'haproxy.cfg'), haproxyCfg(replicas.map((r) => r.port), port));
      const check = spawnSync('haproxy', ['-c', '-f', join(dir, 'haproxy.cfg')], { encoding: 'utf8' });
      assert.equal(check.status, 0, check.stderr);
      const haproxy = Program.start('haproxy', 'haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], join(dir, 'haproxy.log'));
      programs.push(haproxy);
      const url = `http://127.0.0.1:${port}`;
      // Every replica passed its checks (rise 2).
      await until('haproxy', async () => (await status(`${url}/ready`)) === 200);
      await sleep(3000);
      await rollingRestart(t, url);
      await haproxy.stop();
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  test('Prometheus: up is 1 for every replica; every dashboard and alert expression evaluates', async (t) => {
    try {
      const query = async (expr: string): Promise<PromResponse> => (await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)).json() as Promise<PromResponse>;
      // An error on each replica, so that "errors by code" has a series in every process.
      for (const r of replicas) {
        const res = await fetch(`${r.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], temperature: 7 }) });
        assert.equal(res.status, 400);
      }
      await sleep(3000);

      const up = await until('up == 1 for every replica', async () => {
        const r = await query('up{job="tinyllava"}');
        return r.data.result.length === replicas.length && r.data.result.every((s: any) => s.value[1] === '1') ? r : undefined;
      }, 30_000, 500);
      assert.deepEqual(up.data.result.map((s: any) => s.metric.instance).sort(), replicas.map((r) => `127.0.0.1:${r.port}`).sort());

      const names = new Set(((await (await fetch(`${promUrl}/api/v1/label/__name__/values`)).json()) as PromResponse).data as string[]);
      const dashboard = dashboardQueries();
      const alerts = alertQueries();
      for (const { where, expr } of [...dashboard, ...alerts]) {
        for (const name of expr.match(/\btinyllava_\w+/g) ?? []) assert.ok(names.has(name), `${where}: no series named ${name}`);
        const r = await query(expr);
        assert.equal(r.status, 'success', `${where}: ${r.error} in ${expr}`);
        // A dashboard query that returns nothing after this load has a wrong name or label.
        if (dashboard.some((d) => d.expr === expr)) assert.ok(r.data.result.length > 0, `${where}: no data for ${expr}`);
      }
      t.diagnostic(`${dashboard.length} dashboard and ${alerts.length} alert expressions evaluated`);

      const groups = await until('the alert rules evaluated', async () => {
        const r = ((await (await fetch(`${promUrl}/api/v1/rules`)).json()) as PromResponse).data.groups as any[];
        return r.length > 0 && r.every((g) => g.rules.every((rule: any) => rule.health !== 'unknown')) ? r : undefined;
      }, 30_000, 500);
      const rules = groups.flatMap((g) => g.rules);
      assert.equal(rules.length, alerts.length);
      for (const rule of rules) assert.equal(rule.health, 'ok', `${rule.name}: ${rule.lastError}`);
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  test('promtool: check rules, check config and check metrics are clean', async () => {
    const rules = spawnSync('promtool', ['check', 'rules', join(deployDir, 'prometheus/alerts.yml')], { encoding: 'utf8' });
    assert.equal(rules.status, 0, rules.stdout + rules.stderr);
    const config = spawnSync('promtool', ['check', 'config', join(deployDir, 'prometheus/prometheus.yml')], { encoding: 'utf8' });
    assert.equal(config.status, 0, config.stdout + config.stderr);
    const text = await (await fetch(`${replicas[0].url}/metrics`)).text();
    assert.ok(counterSum(text, 'tinyllava_request_success_total') > 0, 'metrics after traffic');
    const metrics = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(metrics.status, 0, metrics.stdout + metrics.stderr);
    assert.equal((metrics.stdout + metrics.stderr).trim(), '');
    const haproxy = spawnSync('haproxy', ['-c', '-q', '-f', join(deployDir, 'haproxy/haproxy.cfg')], { encoding: 'utf8' });
    assert.equal(haproxy.status, 0, haproxy.stderr);
  });
});
