// The methods each documented path takes, read from openapi.yaml (plus the chat page's GET
// paths when it is on), so that a known path asked with another method gets 405 and an `Allow`
// header (RFC 9110) instead of a 404. Routes and the document cannot disagree:
// test/api/openapi.test.ts checks the app serves exactly these.

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

export class AllowedMethods {
  private readonly paths: { pattern: RegExp; methods: string[] }[];

  constructor(paths: Record<string, Record<string, unknown>>) {
    this.paths = Object.entries(paths).map(([path, operations]) => {
      const methods = Object.keys(operations)
        .filter((m) => METHODS.includes(m))
        .map((m) => m.toUpperCase());
      // fastify answers HEAD wherever it answers GET.
      if (methods.includes('GET') && !methods.includes('HEAD')) methods.push('HEAD');
      const source = path
        .split(/\{[^}]+\}/)
        .map((s) => s.replace(/[.*+?^$()|[\]\\]/g, '\\$&'))
        .join('[^/]+');
      return { pattern: new RegExp(`^${source}$`), methods };
    });
  }

  /** The methods `path` (no query string) takes, or null when no documented path matches. */
  of(path: string): string[] | null {
    return this.paths.find((p) => p.pattern.test(path))?.methods ?? null;
  }
}
