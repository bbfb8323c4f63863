// `npm start` as a child process for black-box tests: dist/src/cli/serve.js (or another command
// that runs it, such as npm itself) on a free port, its JSON log lines collected, resolved once
// it listens (and, when asked, once /ready is 200).

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './harness.js';

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  logs: Record<string, any>[];
  /** Whatever it wrote to stderr so far. */
  stderr: string;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL if it has not exited within a few seconds. */
  stop(): Promise<void>;
}

export const SERVE = join(repoRoot, 'dist/src/cli/serve.js');

export async function startServer(
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
  options: { ready?: boolean; command?: string[] } = {},
): Promise<ServerProcess> {
  const command = options.command ?? [process.execPath, SERVE];
  const child = spawn(command[0], [...command.slice(1), '--port', '0', ...args], {
    cwd: repoRoot,
    env: { ...process.env, LOG_FORMAT: 'json', INTRA_OP_THREADS: '1', VISION_INTRA_OP_THREADS: '1', SHUTDOWN_DELAY: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, any>[] = [];
  // 'close', not 'exit': 'exit' can come before the last of its stdout has been read, and the
  // tests look at the last log lines ('stopped').
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith('{')) continue; // npm's own output
        const entry = JSON.parse(line) as Record<string, any>;
        logs.push(entry);
        const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(entry.msg ?? '');
        if (m) resolve(m[1]);
      }
    });
    void exited.then((code) => reject(new Error(`the server exited with ${code} before listening: ${stderr.slice(-2000)}`)));
  });
  const server: ServerProcess = {
    child,
    url,
    logs,
    get stderr() {
      return stderr;
    },
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
  if (options.ready) {
    for (let i = 0; (await fetch(`${url}/ready`)).status !== 200; i++) {
      if (i >= 600) {
        await server.stop();
        throw new Error('the model did not load within 60 s');
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return server;
}
