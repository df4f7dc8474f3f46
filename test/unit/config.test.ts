/** Configuration sources and their precedence: flags > environment (AWS_*) > file > defaults. */
import { describe, expect, it } from 'vitest';
import { envConfig, resolveConfig } from '../../src/config.js';

describe('config', () => {
  it('applies defaults', () => {
    const c = resolveConfig({ flags: { s3: { bucket: 'my-bucket' } } });
    expect(c.s3).toMatchObject({ bucket: 'my-bucket', region: 'us-east-1', forcePathStyle: true, partSize: 8 * 1024 * 1024 });
    expect(c.vault.blockSize).toBe(1024 * 1024);
    expect(c.fs.metadataCacheSize).toBe(2048);
  });

  it('reads the AWS tools’ environment variables', () => {
    expect(envConfig({ AWS_ENDPOINT_URL: 'http://a:1', AWS_DEFAULT_REGION: 'eu-west-1', AWS_PROFILE: 'p' })).toEqual({ s3: { endpoint: 'http://a:1', region: 'eu-west-1', profile: 'p' } });
    expect(envConfig({ AWS_ENDPOINT_URL: 'http://a:1', AWS_ENDPOINT_URL_S3: 'http://s3:2', AWS_REGION: 'r1', AWS_DEFAULT_REGION: 'r2' }).s3).toMatchObject({ endpoint: 'http://s3:2', region: 'r1' });
  });

  it('flags beat the environment, which beats the file', () => {
    const c = resolveConfig({
      file: { s3: { bucket: 'from-file', region: 'file-region', endpoint: 'http://file:1' }, vault: { blockSize: 262144 } },
      env: { s3: { region: 'env-region', endpoint: 'http://env:2' } },
      flags: { s3: { bucket: 'from-flag', endpoint: 'http://flag:3', region: undefined } },
    });
    expect(c.s3).toMatchObject({ bucket: 'from-flag', region: 'env-region', endpoint: 'http://flag:3' });
    expect(c.vault.blockSize).toBe(262144);
  });

  it('names the bad setting in one message', () => {
    expect(() => resolveConfig({ flags: { s3: { bucket: 'b' } } })).toThrow(/s3\.bucket: bucket name must have 3 to 63 characters/);
    expect(() => resolveConfig({ flags: { s3: { bucket: 'bucket' }, vault: { blockSize: 100000 } } })).toThrow(/vault\.blockSize/);
    expect(() => resolveConfig({ flags: { s3: { bucket: 'bucket', endpoint: 'nope' } } })).toThrow(/s3\.endpoint/);
  });
});
