/** A setting that cannot be used (bad flag, file, or environment variable): one message naming it, exit 2. */
export class ConfigError extends Error {}
