#!/usr/bin/env node
// Summarises a V8 CPU profile (node --cpu-prof): self and inclusive time per function, optionally only between two
// instants (seconds from the profile's start), to see where s3vault's time went during one workload.
//   node bench/profile-summary.mjs <file.cpuprofile> [top=30] [fromSec] [toSec]
import { readFileSync } from 'node:fs';

const [file, topArg, fromArg, toArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-summary.mjs <file.cpuprofile> [top=30] [fromSec] [toSec]');
  process.exit(2);
}
const top = Number(topArg ?? 30);
const fromUs = Number(fromArg ?? 0) * 1e6;
const toUs = toArg === undefined ? Number.POSITIVE_INFINITY : Number(toArg) * 1e6;

const profile = JSON.parse(readFileSync(file, 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber}`;

const self = new Map();
const inclusive = new Map();
let total = 0;
let at = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0;
  at += dt;
  if (at < fromUs || at > toUs) continue;
  total += dt;
  const leaf = nodes.get(profile.samples[i]);
  self.set(label(leaf), (self.get(label(leaf)) ?? 0) + dt);
  // Each function once per sample, however deep the recursion.
  const seen = new Set();
  for (let id = leaf.id; id !== undefined; id = parent.get(id)) {
    const l = label(nodes.get(id));
    if (seen.has(l)) continue;
    seen.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + dt);
  }
}

const show = (title, m) => {
  console.log(`-- ${title}`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${(v / 1000).toFixed(0).padStart(8)} ms  ${k}`);
};
console.log(`sampled ${(total / 1000).toFixed(0)} ms of a ${(at / 1e6).toFixed(1)} s profile`);
show('self', self);
show('inclusive', inclusive);
