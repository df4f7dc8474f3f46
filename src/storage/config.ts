/** Configuration of the storage layer (validated with zod; composed in src/config.ts). */
import { z } from 'zod';

const MiB = 1024 * 1024;

export const s3ConfigSchema = z.object({
  bucket: z.string().min(3, 'bucket name must have 3 to 63 characters').max(63, 'bucket name must have 3 to 63 characters'),
  prefix: z.string().default(''),
  endpoint: z.string().url('endpoint must be a URL such as http://127.0.0.1:9000').optional(),
  region: z.string().default('us-east-1'),
  forcePathStyle: z.boolean().default(true),
  profile: z.string().optional(),
  credentials: z.object({ accessKeyId: z.string(), secretAccessKey: z.string(), sessionToken: z.string().optional() }).optional(),
  partSize: z.number().int().min(5 * MiB).default(8 * MiB),
  multipartThreshold: z.number().int().min(5 * MiB).default(16 * MiB),
  uploadConcurrency: z.number().int().min(1).max(64).default(4),
  /** Connections per endpoint: room for a walk's 64 HEADs ahead (see the mirror's namespace) and everything else. */
  maxSockets: z.number().int().min(1).default(128),
  connectTimeoutMs: z.number().int().min(100).default(3000),
  /** A request fails (transient, retried) once its connection has been idle this long: no byte sent or received. */
  requestTimeoutMs: z.number().int().min(1000).default(60_000),
  maxAttempts: z.number().int().min(1).default(3),
});

export type S3Config = z.infer<typeof s3ConfigSchema>;
export type S3ConfigInput = z.input<typeof s3ConfigSchema>;
