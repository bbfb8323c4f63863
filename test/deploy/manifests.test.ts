// The deployment files agree with the server and with each other: Kubernetes' probes and grace
// period with SHUTDOWN_DELAY + DRAIN_TIMEOUT, compose's stop grace period, the load balancers'
// and Prometheus' replica lists, HAProxy's check timing with the shutdown delay, every
// environment variable a real setting, the HPA's metric one the server exports, and the
// Dockerfile's form (base as an argument, exec-form HEALTHCHECK on /ready, a numeric non-root
// user, node as the entrypoint). Static: no tool needed.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ApiMetrics } from '../../src/api/metrics.js';
import { CANCEL_GRACE_MS } from '../../src/api/shutdown.js';
import { loadConfig, SETTINGS } from '../../src/config.js';
import { repoRoot } from '../api/support/harness.js';
import { deployDir, deployFile, deployYaml, shippedReplicaCount } from './support/shipped-configs.js';

const SETTING_ENVS = new Set(Object.values(SETTINGS).map((s) => s.env));
const CANCEL_GRACE_S = CANCEL_GRACE_MS / 1000;

function envOf(list: { name: string; value: string }[]): Record<string, string> {
  return Object.fromEntries(list.map((e) => [e.name, e.value]));
}

/** Each name is a setting, and the values parse (loadConfig throws otherwise). */
function checkSettings(env: Record<string, string>, where: string): void {
  for (const name of Object.keys(env)) assert.ok(SETTING_ENVS.has(name), `${where}: ${name} is no setting of src/config.ts`);
  loadConfig([], env);
}

describe('deployment files', () => {
  test('Kubernetes: probes on /ready and /health, grace period covering SHUTDOWN_DELAY + DRAIN_TIMEOUT', () => {
    const deployment = deployYaml('kubernetes/deployment.yaml');
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0];
    const env = envOf(container.env);
    checkSettings(env, 'deployment.yaml');
    const delay = Number(env.SHUTDOWN_DELAY);
    const drain = Number(env.DRAIN_TIMEOUT);
    assert.ok(delay > 0 && drain > 0);
    assert.ok(pod.terminationGracePeriodSeconds >= delay + drain + CANCEL_GRACE_S, `grace ${pod.terminationGracePeriodSeconds} s < ${delay} + ${drain} + ${CANCEL_GRACE_S}`);
    // The server's own delay stands in for a preStop sleep; both would add up.
    assert.equal(container.lifecycle?.preStop, undefined);
    const port = container.ports.find((p: any) => p.name === 'http');
    assert.equal(port.containerPort, 8000);
    assert.equal(container.readinessProbe.httpGet.path, '/ready');
    assert.equal(container.startupProbe.httpGet.path, '/ready');
    assert.equal(container.livenessProbe.httpGet.path, '/health');
    // Out of the endpoints well within the delay.
    assert.ok(container.readinessProbe.periodSeconds * container.readinessProbe.failureThreshold < delay);
    assert.ok(container.resources.requests.cpu && container.resources.limits.memory);
    assert.equal(pod.securityContext.runAsUser, 10001);
    assert.equal(pod.securityContext.runAsNonRoot, true);

    const service = deployYaml('kubernetes/service.yaml');
    assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
    assert.equal(service.spec.ports[0].targetPort, 'http');
    const hpa = deployYaml('kubernetes/hpa.yaml');
    assert.equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name);
    const exported = new ApiMetrics(() => null, { processMetrics: false }).registry.getMetricsAsArray().map((m) => m.name);
    assert.ok(exported.includes(hpa.spec.metrics[0].pods.metric.name));
    const kustomization = deployYaml('kubernetes/kustomization.yaml');
    for (const file of kustomization.resources) assert.ok(existsSync(join(deployDir, 'kubernetes', file)), file);
    const claim = pod.volumes.find((v: any) => v.persistentVolumeClaim).persistentVolumeClaim.claimName;
    assert.equal(deployYaml('kubernetes/models-pvc.yaml').metadata.name, claim);
  });

  test('compose: replicas, stop grace period, mounted files, and the same replica list everywhere', () => {
    const compose = deployYaml('compose.yaml');
    const replica = compose['x-replica'];
    // Compose fills in ${VAR:-default} from the environment; here, with the defaults.
    const defaults = Object.fromEntries(Object.entries<string>(replica.environment).map(([k, v]) => [k, v.replace(/^\$\{\w+:-(.*)\}$/, '$1')]));
    checkSettings(defaults, 'compose.yaml');
    const delay = Number(replica.environment.SHUTDOWN_DELAY);
    const drain = Number(replica.environment.DRAIN_TIMEOUT);
    assert.ok(Number.parseInt(replica.stop_grace_period, 10) >= delay + drain + CANCEL_GRACE_S);
    const names = Object.keys(compose.services).filter((s) => /^tinyllava-\d+$/.test(s)).sort();
    assert.ok(names.length >= 2, 'at least two replicas, so that one can restart');
    assert.equal(shippedReplicaCount(), names.length);
    for (const name of names) {
      assert.equal(compose.services[name].image, replica.image);
      assert.match(deployFile('haproxy/haproxy.cfg'), new RegExp(`server ${name} ${name}:8000$`, 'm'));
      assert.ok(deployYaml('prometheus/prometheus.yml').scrape_configs[0].static_configs[0].targets.includes(`${name}:8000`));
    }
    for (const service of ['nginx', 'haproxy', 'prometheus', 'grafana']) assert.ok(compose.services[service], service);
    for (const service of Object.values<any>(compose.services)) {
      for (const volume of service.volumes ?? []) {
        const source = String(volume).split(':')[0];
        if (source.startsWith('.')) assert.ok(existsSync(join(deployDir, source)), `compose mounts ${source}`);
      }
    }
  });

  test('HAProxy leaves a replica out before its shutdown delay ends', () => {
    const cfg = deployFile('haproxy/haproxy.cfg');
    const m = /default-server .*\binter (\d+)s .*\bfall (\d+)/.exec(cfg)!;
    assert.ok(m, 'inter and fall on default-server');
    assert.match(cfg, /option httpchk GET \/ready/);
    assert.match(cfg, /retry-on .*\bconn-failure\b.*\b503\b/);
    const delay = Number(deployYaml('compose.yaml')['x-replica'].environment.SHUTDOWN_DELAY);
    // One interval for the check in flight, fall more to fail.
    assert.ok((Number(m[2]) + 1) * Number(m[1]) < delay, `inter ${m[1]} s x (fall ${m[2]} + 1) >= SHUTDOWN_DELAY ${delay} s`);
    const nginx = deployFile('nginx/nginx.conf');
    assert.match(nginx, /proxy_next_upstream error timeout http_503 non_idempotent;/);
    assert.match(nginx, /proxy_buffering off;/);
    assert.match(nginx, new RegExp(`client_max_body_size ${SETTINGS.bodyLimitBytes.default / 2 ** 20}m;`));
  });

  test('the dashboard shows what the issue asks for, from the provisioned data source', () => {
    const dashboard = JSON.parse(deployFile('grafana/dashboards/tinyllava.json'));
    const panels = (dashboard.panels as any[]).filter((p) => p.type !== 'row');
    const exprs = panels.flatMap((p) => p.targets.map((t: any) => t.expr as string)).join('\n');
    for (const metric of [
      'time_to_first_token_seconds_bucket',
      'request_queue_time_seconds',
      'request_image_preprocess_time_seconds',
      'request_vision_encoder_time_seconds',
      'request_prefill_time_seconds',
      'inter_token_latency_seconds_bucket',
      'generation_tokens_total',
      'num_requests_running',
      'num_requests_waiting',
      'kv_cache_usage_perc',
      'image_cache_hits_total',
      'image_cache_misses_total',
      'prefix_cache_hits_total',
      'prefix_cache_queries_total',
      'request_errors_total',
    ]) {
      assert.ok(exprs.includes(`tinyllava_${metric}`), metric);
    }
    assert.match(exprs, /sum by \(code\) \(rate\(tinyllava_request_errors_total/);
    assert.equal(new Set(dashboard.panels.map((p: any) => p.id)).size, dashboard.panels.length, 'unique panel ids');
    for (const p of panels) assert.equal(p.datasource.uid, '${datasource}', p.title);
    const datasource = deployYaml('grafana/provisioning/datasources/prometheus.yml').datasources[0];
    assert.equal(datasource.type, 'prometheus');
    assert.equal(datasource.url, 'http://prometheus:9090');
    const provider = deployYaml('grafana/provisioning/dashboards/tinyllava.yml').providers[0];
    const mount = deployYaml('compose.yaml').services.grafana.volumes.find((v: string) => v.startsWith('./grafana/dashboards:'));
    assert.equal(mount.split(':')[1], provider.options.path);
  });

  test('Dockerfile: base as an argument, CPU and CUDA targets, exec-form HEALTHCHECK on /ready, numeric non-root user', () => {
    const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
    assert.match(dockerfile, /^ARG BASE_IMAGE=node:20-bookworm-slim$/m);
    assert.match(dockerfile, /^ARG CUDA_BASE_IMAGE=nvidia\/cuda:13\.\S+-ubuntu24\.04$/m);
    assert.match(dockerfile, /RUN npm run setup:cuda/);
    const stages = [...dockerfile.matchAll(/^FROM (\S+) AS (\S+)$/gm)].map((m) => ({ from: m[1], name: m[2] }));
    assert.equal(stages.at(-1)!.name, 'cpu', 'the CPU image is the default target');
    assert.ok(stages.some((s) => s.name === 'cuda' && s.from === '${CUDA_BASE_IMAGE}'));
    assert.doesNotMatch(dockerfile, /nuget/i);
    assert.doesNotMatch(dockerfile, /^COPY models /m, 'model exports stay out');
    const healthchecks = [...dockerfile.matchAll(/^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$/gm)].map((m) => JSON.parse(m[1]) as string[]);
    assert.equal(healthchecks.length, 2);
    for (const cmd of healthchecks) {
      assert.equal(cmd[0], 'node');
      assert.match(cmd.join(' '), /\/ready/);
    }
    const users = [...dockerfile.matchAll(/^USER (.+)$/gm)].map((m) => m[1]);
    assert.deepEqual(users, ['10001:10001', '10001:10001']);
    assert.equal([...dockerfile.matchAll(/useradd [^\n]*--uid 10001/g)].length, 2, 'the user exists in both images');
    const entrypoints = [...dockerfile.matchAll(/^ENTRYPOINT (.+)$/gm)].map((m) => JSON.parse(m[1]));
    assert.deepEqual(entrypoints, [['node', 'dist/src/cli/serve.js'], ['node', 'dist/src/cli/serve.js']]);
    const ignored = readFileSync(join(repoRoot, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['node_modules', 'dist', '.venv', 'native/target', '.cuda', 'models/*', '!models/tinyllava-demo']) assert.ok(ignored.includes(entry), entry);
  });
});
