/**
 * Maps an AWS SDK v3 failure to an RWRESULT (table in DESIGN.md "Storage drivers"):
 * transient network/server trouble → FAILURE (retry), a problem with one object → FILE_FAILURE,
 * a problem with the bucket or the credentials → PERMANENT_FAILURE.
 */
import { RWRESULT, type RwResult, StorageError } from './rwresult.js';

/** The parts of an SDK (or Node network) error the mapping looks at. */
export interface SdkErrorLike {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

const PERMANENT = new Set(['NoSuchBucket', 'CredentialsProviderError', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'AccountProblem', 'AllAccessDisabled', 'InvalidBucketName']);
const FILE = new Set(['NoSuchKey', 'NotFound', 'InvalidObjectState', 'NoSuchVersion', 'ObjectNotInActiveTierError']);
const TRANSIENT = new Set(['SlowDown', 'ServiceUnavailable', 'InternalError', 'RequestTimeout', 'RequestTimeoutException', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'TimeoutError', 'RequestTimeTooSkewed', 'AbortError']);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED', 'ESOCKETTIMEDOUT', 'UND_ERR_SOCKET']);

/** Operations on the bucket itself: an AccessDenied there means every transfer would fail. */
const BUCKET_OPS = new Set(['probe', 'list']);

export function classifyS3Error(err: SdkErrorLike, op: string): RwResult {
  const name = err.name ?? '';
  const status = err.$metadata?.httpStatusCode;
  const code = err.code ?? '';
  if (PERMANENT.has(name)) return RWRESULT.PERMANENT_FAILURE;
  if (name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
    return BUCKET_OPS.has(op) ? RWRESULT.PERMANENT_FAILURE : RWRESULT.FILE_FAILURE;
  }
  if (name === 'PreconditionFailed' || status === 412) return RWRESULT.FILE_MODIFIED_EXTERNALLY;
  if (name === 'InvalidRange' || status === 416) return RWRESULT.RANGE_BEYOND_EOF;
  // A bucket-level call that finds nothing: the bucket itself is missing.
  if ((status === 404 || name === 'NotFound') && BUCKET_OPS.has(op)) return RWRESULT.PERMANENT_FAILURE;
  if (FILE.has(name)) return RWRESULT.FILE_FAILURE;
  if (TRANSIENT.has(name) || NETWORK_CODES.has(code) || NETWORK_CODES.has(name)) return RWRESULT.FAILURE;
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) return RWRESULT.FAILURE;
  if (status === 404) return RWRESULT.FILE_FAILURE;
  if (status !== undefined && status >= 400) return RWRESULT.FILE_FAILURE;
  // No HTTP answer at all: the request never reached a server (refused, reset, DNS, timeout).
  return RWRESULT.FAILURE;
}

/** A one-line human description of the failure, without the SDK's stack or XML. */
export function describeS3Error(err: SdkErrorLike, endpoint: string): string {
  const name = err.name ?? 'Error';
  const code = err.code ?? '';
  if (name === 'NoSuchBucket') return 'the bucket does not exist';
  if (name === 'CredentialsProviderError') return 'no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)';
  if (name === 'InvalidAccessKeyId') return 'the access key is not known to the server (check AWS_ACCESS_KEY_ID / the profile)';
  if (name === 'SignatureDoesNotMatch') return 'the secret key is wrong (signature rejected; check AWS_SECRET_ACCESS_KEY / the profile)';
  if (name === 'AccessDenied' || err.$metadata?.httpStatusCode === 403) return 'access denied by the server (check the credentials and the bucket policy)';
  if (code === 'ECONNREFUSED' || name === 'ECONNREFUSED') return `cannot reach ${endpoint}: connection refused`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot reach ${endpoint}: host name not found`;
  if (code === 'ETIMEDOUT' || name === 'TimeoutError') return `cannot reach ${endpoint}: timed out`;
  if (code === 'ECONNRESET') return `connection to ${endpoint} was reset`;
  const status = err.$metadata?.httpStatusCode;
  const msg = (err.message ?? '').split('\n')[0];
  return `${name}${status ? ` (HTTP ${status})` : ''}${msg && msg !== name ? `: ${msg}` : ''}`;
}

export function toStorageError(err: unknown, op: string, key: string | undefined, endpoint: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = (err ?? {}) as SdkErrorLike;
  return new StorageError(classifyS3Error(e, op), op, key, describeS3Error(e, endpoint), { cause: err, httpStatus: e.$metadata?.httpStatusCode });
}
