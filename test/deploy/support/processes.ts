// Processes the deployment tests start and stop by themselves: server replicas on loopback
// ports, and programs (nginx, HAProxy, Prometheus, podman) with their output kept in a log file
// that a failing test prints. Every process started here is ended by its own pid.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../api/support/harness.js';

export { freePort } from '../../../bench/server-process.js';

/**
 * Installs the Debian packages a test needs (tools/deploy/setup-tools.sh) when missing. Returns
 * why the test must be skipped (not root and the tools are missing), or null once they are there.
 */
export function setupTools(what: 'image' | 'topology'): string | null {
  const r = spawnSync('bash', [join(repoRoot, 'tools/deploy/setup-tools.sh'), what], { encoding: 'utf8', stdio: ['ignore', 'inherit', 'pipe'] });
  if (r.status === 0) return null;
  if (process.getuid?.() !== 0) return r.stderr.trim();
  throw new Error(`tools/deploy/setup-tools.sh ${what} failed:\n${r.stderr}`);
}

export async function until<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined && v !== false) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export async function status(url: string): Promise<number> {
  const res = await fetch(url);
  await res.arrayBuffer();
  return res.status;
}

/** A program whose stdout and stderr go to a log file. */
export class Program {
  readonly exited: Promise<number | null>;
  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  }

  static start(name: string, command: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): Program {
    // The file itself, not a pipe: a program may open /dev/stdout (nginx's access_log does).
    const log = openSync(logFile, 'a');
    try {
      const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', log, log] });
      return new Program(name, child, logFile);
    } finally {
      closeSync(log);
    }
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends SIGTERM and resolves with the exit code; SIGKILL after `graceMs`. */
  async stop(graceMs = 60_000): Promise<number | null> {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }

  tail(lines = 40): string {
    try {
      return `--- ${this.name} (${this.logFile}) ---\n${readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n')}`;
    } catch {
      return `--- ${this.name}: no log ---`;
    }
  }
}

const SERVE = join(repoRoot, 'dist/src/cli/serve.js');

/** One server replica on a fixed loopback port, restartable on that port. */
export class Replica {
  program: Program | null = null;
  starts = 0;
  constructor(
    readonly name: string,
    readonly port: number,
    private readonly env: NodeJS.ProcessEnv,
    private readonly logDir: string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  start(): void {
    this.starts++;
    this.program = Program.start(this.name, process.execPath, [SERVE, '--host', '127.0.0.1', '--port', String(this.port)], join(this.logDir, `${this.name}.log`), {
      INTRA_OP_THREADS: '1',
      VISION_INTRA_OP_THREADS: '1',
      LOG_LEVEL: 'warn',
      ...this.env,
    });
  }

  async ready(timeoutMs = 120_000): Promise<void> {
    await until(`${this.name} /ready`, async () => (await status(`${this.url}/ready`)) === 200, timeoutMs);
  }

  stop(): Promise<number | null> {
    return this.program?.stop() ?? Promise.resolve(null);
  }
}
