// `npm start` as a child process for black-box tests: dist/src/cli/serve.js on a free port, its
// JSON log lines collected, resolved once it listens (and, when asked, once /ready is 200).

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './harness.js';

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  logs: Record<string, any>[];
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL if it has not exited within a few seconds. */
  stop(): Promise<void>;
}

export async function startServer(args: string[] = [], env: NodeJS.ProcessEnv = {}, options: { ready?: boolean } = {}): Promise<ServerProcess> {
  const child = spawn(process.execPath, [join(repoRoot, 'dist/src/cli/serve.js'), '--port', '0', ...args], {
    cwd: repoRoot,
    env: { ...process.env, LOG_FORMAT: 'json', INTRA_OP_THREADS: '1', VISION_INTRA_OP_THREADS: '1', SHUTDOWN_DELAY: '0', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const logs: Record<string, any>[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const entry = JSON.parse(line) as Record<string, any>;
        logs.push(entry);
        const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(entry.msg ?? '');
        if (m) resolve(m[1]);
      }
    });
    void exited.then((code) => reject(new Error(`the server exited with ${code} before listening`)));
  });
  const server: ServerProcess = {
    child,
    url,
    logs,
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
