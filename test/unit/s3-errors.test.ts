/** The S3 failure → RWRESULT mapping of DESIGN.md, one row per outcome. */
import { describe, expect, it } from 'vitest';
import { RWRESULT } from '../../src/storage/rwresult.js';
import { classifyS3Error, describeS3Error, toStorageError } from '../../src/storage/s3-errors.js';

const http = (name: string, status: number) => ({ name, $metadata: { httpStatusCode: status } });
const net = (code: string) => Object.assign(new Error(`connect ${code}`), { code, name: 'Error' });

describe('classifyS3Error', () => {
  it.each([
    ['NoSuchKey on read', http('NoSuchKey', 404), 'read', RWRESULT.FILE_FAILURE],
    ['InvalidObjectState (archived object)', http('InvalidObjectState', 403), 'read', RWRESULT.FILE_FAILURE],
    ['AccessDenied on one object', http('AccessDenied', 403), 'read', RWRESULT.FILE_FAILURE],
    ['AccessDenied on the bucket (probe)', http('AccessDenied', 403), 'probe', RWRESULT.PERMANENT_FAILURE],
    ['AccessDenied on a listing', http('AccessDenied', 403), 'list', RWRESULT.PERMANENT_FAILURE],
    ['NoSuchBucket', http('NoSuchBucket', 404), 'read', RWRESULT.PERMANENT_FAILURE],
    ['InvalidAccessKeyId', http('InvalidAccessKeyId', 403), 'write', RWRESULT.PERMANENT_FAILURE],
    ['SignatureDoesNotMatch', http('SignatureDoesNotMatch', 403), 'write', RWRESULT.PERMANENT_FAILURE],
    ['no credentials at all', { name: 'CredentialsProviderError' }, 'probe', RWRESULT.PERMANENT_FAILURE],
    ['PreconditionFailed (ETag changed)', http('PreconditionFailed', 412), 'read', RWRESULT.FILE_MODIFIED_EXTERNALLY],
    ['InvalidRange (read past EOF)', http('InvalidRange', 416), 'read', RWRESULT.RANGE_BEYOND_EOF],
    ['SlowDown', http('SlowDown', 503), 'write', RWRESULT.FAILURE],
    ['ServiceUnavailable', http('ServiceUnavailable', 503), 'read', RWRESULT.FAILURE],
    ['InternalError 500', http('InternalError', 500), 'read', RWRESULT.FAILURE],
    ['unnamed 502', http('Unknown', 502), 'read', RWRESULT.FAILURE],
    ['429 throttling', http('TooManyRequestsException', 429), 'read', RWRESULT.FAILURE],
    ['connection refused', net('ECONNREFUSED'), 'read', RWRESULT.FAILURE],
    ['connection reset', net('ECONNRESET'), 'write', RWRESULT.FAILURE],
    ['socket timeout', net('ETIMEDOUT'), 'read', RWRESULT.FAILURE],
    ['SDK request timeout', { name: 'TimeoutError' }, 'read', RWRESULT.FAILURE],
    ['DNS failure', net('ENOTFOUND'), 'probe', RWRESULT.FAILURE],
    ['an unknown 400 on one object', http('InvalidArgument', 400), 'write', RWRESULT.FILE_FAILURE],
    ['404 without a body on the probe', http('NotFound', 404), 'probe', RWRESULT.PERMANENT_FAILURE],
  ])('%s', (_label, err, op, expected) => {
    expect(classifyS3Error(err, op)).toBe(expected);
  });
});

describe('describeS3Error', () => {
  it('gives one readable line without stack or XML', () => {
    expect(describeS3Error(net('ECONNREFUSED'), 'http://127.0.0.1:1')).toBe('cannot reach http://127.0.0.1:1: connection refused');
    expect(describeS3Error(http('NoSuchBucket', 404), 'e')).toBe('the bucket does not exist');
    expect(describeS3Error(http('SignatureDoesNotMatch', 403), 'e')).toMatch(/secret key is wrong/);
    expect(describeS3Error({ name: 'Weird', message: 'first line\nsecond line', $metadata: { httpStatusCode: 418 } }, 'e')).toBe('Weird (HTTP 418): first line');
  });

  it('toStorageError carries operation, key and RWRESULT', () => {
    const e = toStorageError(http('NoSuchKey', 404), 'read', 'a/b.txt', 'e');
    expect(e.result).toBe(RWRESULT.FILE_FAILURE);
    expect(e.message).toBe('read "a/b.txt": NoSuchKey (HTTP 404) [FILE_FAILURE]');
    expect(e.transient).toBe(false);
    expect(toStorageError(net('ECONNRESET'), 'write', 'k', 'e').transient).toBe(true);
  });

  it('toStorageError keeps the HTTP status of an answer, and none when no server answered', () => {
    const answered = toStorageError(http('InternalError', 500), 'write', 'k', 'e');
    expect(answered.transient).toBe(true);
    expect(answered.httpStatus).toBe(500);
    expect(toStorageError(net('ECONNREFUSED'), 'write', 'k', 'e').httpStatus).toBeUndefined();
  });
});
