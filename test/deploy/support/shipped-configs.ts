// The shipped deployment files of deploy/, read as they are and, for the loopback tests, with
// only their addresses rewritten: the replicas' host:port, the load balancer's listening port,
// Prometheus' targets (and its intervals, so that a short test has data). Every other setting
// is the shipped one. A rewrite that finds nothing to rewrite throws, so that a changed file
// cannot silently leave the test running something else.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { repoRoot } from '../../api/support/harness.js';

export const deployDir = join(repoRoot, 'deploy');

export function deployFile(path: string): string {
  return readFileSync(join(deployDir, path), 'utf8');
}

export function deployYaml<T = any>(path: string): T {
  return parseYaml(deployFile(path), { merge: true }) as T;
}

function replaceAll(text: string, pattern: RegExp, expected: number, replace: (m: RegExpExecArray) => string, what: string): string {
  let count = 0;
  const out = text.replace(pattern, (...args) => {
    count++;
    return replace(args.slice(0, -2) as unknown as RegExpExecArray);
  });
  if (count !== expected) throw new Error(`${what}: found ${count}, expected ${expected}`);
  return out;
}

/** The replicas the shipped load-balancer configs and scrape config name (tinyllava-1, ...). */
export function shippedReplicaCount(): number {
  return [...deployFile('nginx/nginx.conf').matchAll(/^\s*server tinyllava-\d+:8000\b/gm)].length;
}

export function nginxConf(replicaPorts: number[], listenPort: number): string {
  let conf = replaceAll(deployFile('nginx/nginx.conf'), /server tinyllava-(\d+):8000/g, replicaPorts.length, (m) => `server 127.0.0.1:${replicaPorts[Number(m[1]) - 1]}`, 'nginx server lines');
  conf = replaceAll(conf, /^(\s*)listen 8000;/gm, 1, (m) => `${m[1]}listen 127.0.0.1:${listenPort};`, 'nginx listen');
  return conf;
}

export function haproxyCfg(replicaPorts: number[], listenPort: number): string {
  let cfg = replaceAll(deployFile('haproxy/haproxy.cfg'), /server (tinyllava-(\d+)) tinyllava-\d+:8000/g, replicaPorts.length, (m) => `server ${m[1]} 127.0.0.1:${replicaPorts[Number(m[2]) - 1]}`, 'haproxy server lines');
  cfg = replaceAll(cfg, /^(\s*)bind :8000$/gm, 1, (m) => `${m[1]}bind 127.0.0.1:${listenPort}`, 'haproxy bind');
  return cfg;
}

export function prometheusYml(replicaPorts: number[], intervalSeconds = 1): string {
  const config = deployYaml('prometheus/prometheus.yml');
  config.global.scrape_interval = `${intervalSeconds}s`;
  config.global.evaluation_interval = `${intervalSeconds}s`;
  config.rule_files = (config.rule_files as string[]).map((f) => join(deployDir, 'prometheus', f));
  const job = (config.scrape_configs as any[]).find((j) => j.job_name === 'tinyllava');
  const targets = job.static_configs[0].targets as string[];
  if (targets.length !== replicaPorts.length) throw new Error(`prometheus targets: ${targets.length}, expected ${replicaPorts.length}`);
  job.static_configs[0].targets = replicaPorts.map((p) => `127.0.0.1:${p}`);
  return stringifyYaml(config);
}

/** The replicas' environment in deploy/compose.yaml (SHUTDOWN_DELAY, DRAIN_TIMEOUT, ...). */
export function composeReplicaEnv(): Record<string, string> {
  const compose = deployYaml('compose.yaml');
  return compose['x-replica'].environment as Record<string, string>;
}

export interface PromQuery {
  where: string;
  expr: string;
}

// Grafana's variables, as the dashboard's "All" selection sends them.
const GRAFANA_VARIABLES: Record<string, string> = { __rate_interval: '1m', model_name: '.*', instance: '.*' };

function grafanaToPromQL(expr: string, where: string): string {
  const out = expr.replace(/\$(\w+)|\$\{(\w+)\}/g, (all, a: string | undefined, b: string | undefined) => {
    const value = GRAFANA_VARIABLES[(a ?? b)!];
    if (value === undefined) throw new Error(`${where}: unknown variable ${all}`);
    return value;
  });
  return out;
}

/** Every PromQL expression of the Grafana dashboard: panel targets, and the metric of each label_values() variable. */
export function dashboardQueries(): PromQuery[] {
  const dashboard = JSON.parse(deployFile('grafana/dashboards/tinyllava.json'));
  const queries: PromQuery[] = [];
  const visit = (panels: any[]): void => {
    for (const panel of panels) {
      if (panel.panels) visit(panel.panels);
      for (const target of panel.targets ?? []) {
        const where = `panel "${panel.title}" ${target.refId}`;
        queries.push({ where, expr: grafanaToPromQL(target.expr, where) });
      }
    }
  };
  visit(dashboard.panels);
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue;
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(variable.query.query);
    if (!m) throw new Error(`variable ${variable.name}: not a label_values() query`);
    queries.push({ where: `variable ${variable.name}`, expr: grafanaToPromQL(m[1], variable.name) });
  }
  return queries;
}

/** Every alert rule's expression. */
export function alertQueries(): PromQuery[] {
  const rules = deployYaml('prometheus/alerts.yml');
  return (rules.groups as any[]).flatMap((g) => (g.rules as any[]).map((r) => ({ where: `alert ${r.alert}`, expr: String(r.expr) })));
}
