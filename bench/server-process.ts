// Starts `npm start`'s entry point as a child process on a free loopback port, waits until it is
// ready, and samples its resident memory while it runs.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SERVE = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'serve.js');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export class ServerProcess {
  private rssPeak = 0;
  private sampler: NodeJS.Timeout | null = null;
  private constructor(readonly child: ChildProcess, readonly baseUrl: string, private readonly log: string[]) {}

  /** Starts the server with the given environment overrides; resolves once /ready says 200. */
  static async start(modelDir: string, env: Record<string, string>, timeoutMs = 300_000): Promise<ServerProcess> {
    const port = await freePort();
    const log: string[] = [];
    const child = spawn(process.execPath, [SERVE, '--model', modelDir, '--host', '127.0.0.1', '--port', String(port)], {
      // A lone server behind no load balancer: nothing to wait for on SIGTERM.
      env: { ...process.env, LOG_LEVEL: 'warn', SHUTDOWN_DELAY: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (b: Buffer) => {
      log.push(b.toString());
      if (log.length > 200) log.shift();
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const server = new ServerProcess(child, `http://127.0.0.1:${port}`, log);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${log.join('')}`);
      try {
        if ((await fetch(`${server.baseUrl}/ready`)).status === 200) return server;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    child.kill('SIGKILL');
    throw new Error(`server not ready after ${timeoutMs} ms:\n${log.join('')}`);
  }

  /** Resident set size of the server process now, in bytes (Linux /proc). */
  rss(): number {
    try {
      const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      return kb * 1024;
    } catch {
      return 0;
    }
  }

  startSampling(intervalMs = 200): void {
    this.rssPeak = this.rss();
    this.sampler = setInterval(() => (this.rssPeak = Math.max(this.rssPeak, this.rss())), intervalMs);
  }

  /** Stops sampling and returns the peak RSS seen since startSampling. */
  stopSampling(): number {
    if (this.sampler) clearInterval(this.sampler);
    this.sampler = null;
    return Math.max(this.rssPeak, this.rss());
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
}
