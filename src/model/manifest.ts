// Opens a model package directory: reads manifest.json, validates it against
// manifest.schema.json, cross-checks its fields and makes sure every file it names is there.
// Everything after this point may trust the manifest.

import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { PackageError } from './errors.js';
import { consistencyProblems } from './manifest-check.js';
import { schemaProblems } from './manifest-schema.js';
import type { Manifest, ManifestFiles } from './manifest-types.js';

export type * from './manifest-types.js';
export { expectedDecoderIO, type GraphIO } from './graph-io.js';
export { imageTokenCount } from './manifest-check.js';

export const MANIFEST_FILE = 'manifest.json';

export interface ModelPackage {
  /** Absolute path of the package directory. */
  dir: string;
  manifest: Manifest;
  /** Absolute paths of manifest.files. */
  paths: ManifestFiles;
}

export async function loadPackage(dir: string): Promise<ModelPackage> {
  const root = path.resolve(dir);
  let text: string;
  try {
    text = await readFile(path.join(root, MANIFEST_FILE), 'utf8');
  } catch (err) {
    const missing = (err as { code?: unknown }).code === 'ENOENT';
    throw new PackageError(
      MANIFEST_FILE,
      missing ? `not found in ${root}: is it a model package made by \`npm run export\`?` : `cannot be read in ${root}: ${(err as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PackageError(MANIFEST_FILE, `is not valid JSON: ${(err as Error).message}`);
  }
  const manifest = parseManifest(json);
  return { dir: root, manifest, paths: await resolveFiles(root, manifest.files) };
}

/** Validates an already-parsed manifest (schema, then cross-field rules). */
export function parseManifest(json: unknown): Manifest {
  const shape = schemaProblems(json);
  if (shape.length > 0) throw new PackageError(MANIFEST_FILE, shape.join('; '));
  const manifest = json as Manifest;
  const consistency = consistencyProblems(manifest);
  if (consistency.length > 0) throw new PackageError(MANIFEST_FILE, consistency.join('; '));
  return manifest;
}

/** Absolute paths of the package's files, each checked to exist inside the package, non-empty. */
async function resolveFiles(root: string, files: ManifestFiles): Promise<ManifestFiles> {
  const resolved = {} as ManifestFiles;
  for (const key of Object.keys(files) as (keyof ManifestFiles)[]) {
    const relative = files[key];
    if (relative === undefined) continue;
    const absolute = path.resolve(root, relative);
    // The schema already refuses ".." and absolute paths; this is the belt to those braces.
    if (!absolute.startsWith(root + path.sep)) {
      throw new PackageError(MANIFEST_FILE, `files.${key} ${JSON.stringify(relative)} points outside the package`);
    }
    let size: number;
    try {
      const info = await stat(absolute);
      if (!info.isFile()) throw new Error('not a regular file');
      size = info.size;
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : (err as Error).message;
      throw new PackageError(relative, `${why} (named by ${MANIFEST_FILE} files.${key})`);
    }
    if (size === 0) throw new PackageError(relative, `is empty (named by ${MANIFEST_FILE} files.${key})`);
    resolved[key] = absolute;
  }
  return resolved;
}
