#!/usr/bin/env node
// `npm run bench` (-- --quick for a short run): the sequential dd figures against local disk and the vault's
// figures, each on its own embedded S3 server, printed and saved under bench/results/. The comparison with the
// raw SDK, s3fs and rclone side by side (issue 8) is not part of it yet.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const env = { ...process.env, SIZE_MB: quick ? '256' : '1024', RUNTIME: quick ? '5' : '20', LIMIT_MB: quick ? '64' : '256' };
const sections = [];
for (const script of ['bench/dd.sh', 'bench/vault.sh']) {
  const r = spawnSync('bash', [script], { cwd: root, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  process.stdout.write(r.stdout);
  if (r.status !== 0) {
    process.stderr.write(`bench: ${script} failed (exit ${r.status})\n`);
    process.exit(1);
  }
  sections.push(r.stdout.trim());
}
const dir = path.join(root, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = path.join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
writeFileSync(file, `# s3vault bench${quick ? ' (quick)' : ''}\n\n\`\`\`\n${sections.join('\n\n')}\n\`\`\`\n`);
process.stdout.write(`bench: saved ${path.relative(root, file)}\n`);
