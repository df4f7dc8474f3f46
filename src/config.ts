/**
 * The whole configuration: one section per layer, validated with zod. Sources, strongest first:
 * command-line flags, environment (AWS_* as the AWS tools read them), a JSON config file, built-in defaults.
 */
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './config-error.js';
import { DEFAULT_LOCAL_PATTERNS } from './fs/mirror/local-names.js';
import { s3ConfigSchema } from './storage/config.js';

const MiB = 1024 * 1024;

export const vaultConfigSchema = z.object({
  dir: z.string().optional(),
  blockSize: z.number().int().min(64 * 1024).max(64 * MiB).refine((n) => (n & (n - 1)) === 0, 'blockSize must be a power of two').default(MiB),
  /**
   * Blocks per ranged GET of a sequential read, and the read-ahead window's largest size, in blocks. Few large ranges
   * cost the server less than many small ones: on s3rver here, a cold 1 GiB read in 64 MiB ranges took 2.06-2.62 s
   * (server CPU 1.8-2.6 s) against 2.30-3.34 s (2.2-3.5 s) in 16 MiB ranges, 5 runs each. The window grows from one
   * block, doubling, so a reader that stops early has had at most as much again fetched ahead. fetchBlocks unset: a
   * quarter of the window, at most 64 (four GETs in flight however small the vault).
   */
  fetchBlocks: z.number().int().min(1).max(64).optional(),
  readAheadBlocks: z.number().int().min(0).max(1024).default(256),
  /** FlushAfterCloseDelay: a changed file is uploaded this long after its last close. */
  flushAfterCloseMs: z.number().int().min(0).default(2000),
  /**
   * While changed files keep closing (a copy, an unpack), their uploads wait for the mount to go quiet (no close for
   * flushAfterCloseMs), but no file waits longer than this after its close. At most flushAfterCloseMs: never wait.
   */
  flushMaxDelayMs: z.number().int().min(0).default(30_000),
  /** Files uploaded at once (at most; the queue's memory budget lets fewer large ones run together). */
  uploadConcurrency: z.number().int().min(1).max(64).default(32),
  /** What an upload does when the object changed in storage meanwhile. */
  conflictPolicy: z.enum(['keep-both', 'local-wins', 'remote-wins']).default('keep-both'),
  /** Bytes of closed, changed files waiting for upload past which writers wait; default half the size limit. */
  dirtyBudget: z.number().int().min(MiB).optional(),
  /**
   * Stream uploads: a large file written from its start goes to S3 part by part while it is written, so that
   * little is left to send once it is closed. Its object then has no mtime header (LastModified stands for it),
   * unless its mtime is set explicitly (cp -p, rsync -t), in which case it is uploaded whole after all.
   */
  streamUploads: z.boolean().default(false),
  /** Bytes of cached data (UserModeFileCacheSize analogue); dirty and pinned data may go past it. */
  sizeLimit: z.number().int().min(MiB, 'the vault size limit must be at least 1 MiB').default(314_572_800),
});

const UNITS: Record<string, number> = { '': 1, K: 1024, M: MiB, G: 1024 * MiB, T: 1024 * 1024 * MiB };

/** "300M", "20G", "1.5T", "65536" → bytes (binary units). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) throw new ConfigError(`invalid size ${JSON.stringify(text)} (use e.g. 300M, 20G)`);
  return Math.round(Number(m[1]) * UNITS[m[2]!.toUpperCase()]!);
}

export const fsConfigSchema = z.object({
  metadataTtlMs: z.number().int().min(0).default(5000),
  metadataCacheSize: z.number().int().min(16).max(65536).default(2048),
  /** Lifetime of directory listings kept in the vault: a warm `ls` within it needs no request. */
  listingTtlMs: z.number().int().min(0).default(60_000),
  /**
   * Files known only from a listing show the listing's size and time with the default mode and owner, without a
   * HEAD each (mountpoint-s3's and goofys's way: a cold `ls -l` costs the listing alone); their own metadata
   * (mode, owner, mtime, symlink, xattrs) is read when they are opened or changed. Off: every file's metadata.
   */
  listingAttributes: z.boolean().default(false),
  /**
   * FUSE passthrough (Linux ≥ 6.9): a file whose data is all in the vault is read by the kernel straight from the
   * vault's data file, at local-disk speed. Off, or on an older kernel: every read goes through s3vault.
   */
  passthrough: z.boolean().default(true),
  /**
   * A random read stores the whole 1 MiB around it (the vault fetched it anyway) into the kernel's page cache, so
   * the next reads there are answered by the kernel (FUSE notify_store). Never while the file is open for writing.
   */
  pageCacheFill: z.boolean().default(true),
  attrTimeoutSec: z.number().min(0).default(1),
  capacityBytes: z.number().int().min(49152).default(2 ** 50),
  readOnly: z.boolean().default(false),
  /** A point-in-time view of a versioned bucket (ISO 8601 instant); implies readOnly. */
  asOf: z
    .string()
    .refine((v) => !Number.isNaN(Date.parse(v)), 'must be a date and time, e.g. 2026-11-01T12:00:00Z')
    .optional(),
  allowOther: z.boolean().default(false),
  /** vault: fsync is durable in the vault; remote: fsync also waits until the file is in storage. */
  sync: z.enum(['vault', 'remote']).default('vault'),
  /** Most CBFS events running at once (R2/R3); 1 serializes every event (SerializeEvents). */
  maxConcurrentEvents: z.number().int().min(1).max(4096).default(64),
  /** R1 SerializeAccess: when true, even non-overlapping reads of one file wait for each other. */
  serializeAccess: z.boolean().default(false),
  /** Per-event deadline (R4): 0 = none, else at least 3000 ms; an expired request fails with EIO. */
  eventTimeoutMs: z
    .number()
    .int()
    .min(0)
    .default(0)
    .refine((v) => v === 0 || v >= 3000, 'must be 0 (no deadline) or at least 3000 ms (ERROR_IMPLEMENTATION_LIMIT 1292)'),
  /** Names of local files (R44): kept only in the vault, never uploaded. */
  localPatterns: z.array(z.string().min(1)).default(DEFAULT_LOCAL_PATTERNS),
});

export const configSchema = z.object({
  s3: s3ConfigSchema,
  vault: vaultConfigSchema.prefault({}),
  fs: fsConfigSchema.prefault({}),
});

export type Config = z.infer<typeof configSchema>;

export { ConfigError };

type Json = Record<string, unknown>;

export const DEFAULT_CONFIG_FILE = path.join(os.homedir(), '.config', 's3vault', 'config.json');

export function readConfigFile(file: string | undefined): Json {
  const chosen = file ?? (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (!chosen) return {};
  let text: string;
  try {
    text = readFileSync(chosen, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${chosen}: ${(err as Error).message}`);
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as Json;
  } catch (err) {
    throw new ConfigError(`config file ${chosen} is not valid JSON: ${(err as Error).message}`);
  }
}

/** The AWS tools' environment variables that s3vault honours (credentials are read by the SDK itself). */
export function envConfig(env: NodeJS.ProcessEnv = process.env): Json {
  const s3: Json = {};
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  if (endpoint) s3.endpoint = endpoint;
  const region = env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  if (region) s3.region = region;
  if (env.AWS_PROFILE) s3.profile = env.AWS_PROFILE;
  return { s3 };
}

function merge(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && typeof out[k] === 'object' ? merge(out[k] as Json, v as Json) : v;
  }
  return out;
}

/** Merge the sources and validate; any problem is one ConfigError naming the setting. */
export function resolveConfig(sources: { file?: Json; env?: Json; flags?: Json }): Config {
  const { $comment: _, ...file } = sources.file ?? {};
  const merged = merge(merge(file, sources.env ?? {}), sources.flags ?? {});
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(`invalid configuration: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return result.data;
}
