/**
 * FUSE_HANDLE_KILLPRIV_V2's request flags as read from raw requests (the kernel's fuse.h layouts, protocol 7.40),
 * and the mode a file keeps (the kernel's should_remove_suid / setattr_should_drop_sgid). The mount-level proof,
 * side by side with a local disk, is test/integration/suid.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { clearedMode, killRequest } from '../../src/fs/fuse/init.js';

/** A request: fuse_in_header (len, opcode, unique, nodeid, uid, gid, pid), then the body's u32 fields at offsets. */
function request(opcode: number, body: Record<number, number>, length = 128): Buffer {
  const b = Buffer.alloc(length);
  b.writeUInt32LE(length, 0);
  b.writeUInt32LE(opcode, 4);
  b.writeUInt32LE(1000, 24);
  b.writeUInt32LE(100, 28);
  b.writeUInt32LE(4242, 32);
  for (const [at, v] of Object.entries(body)) b.writeUInt32LE(v, 40 + Number(at));
  return b;
}

describe('killRequest', () => {
  it('reads the kernel flags of WRITE (write_flags @20), OPEN (open_flags @4) and CREATE (open_flags @12)', () => {
    expect(killRequest(request(16, { 20: 1 << 2 }), 128)).toEqual({ uid: 1000, gid: 100, pid: 4242, chown: false });
    expect(killRequest(request(16, { 20: 1 << 0 }), 128)).toBeNull(); // FUSE_WRITE_CACHE only
    expect(killRequest(request(14, { 4: 1 }), 128)).not.toBeNull();
    expect(killRequest(request(14, { 0: 0o1001 }), 128)).toBeNull(); // O_TRUNC alone: the caller had CAP_FSETID
    expect(killRequest(request(35, { 12: 1 }), 128)).not.toBeNull();
  });

  it('SETATTR: FATTR_KILL_SUIDGID, a chown (any caller), or nothing to set (the kernel before a passthrough write)', () => {
    expect(killRequest(request(4, { 0: (1 << 3) | (1 << 11) }), 128)?.chown).toBe(false);
    expect(killRequest(request(4, { 0: 1 << 1 }), 128)?.chown).toBe(true);
    expect(killRequest(request(4, { 0: 1 << 2 }), 128)?.chown).toBe(true);
    expect(killRequest(request(4, { 0: 0 }), 128)).not.toBeNull();
    expect(killRequest(request(4, { 0: 1 << 0 }), 128)).toBeNull(); // chmod
    expect(killRequest(request(4, { 0: 1 << 3 }), 128)).toBeNull(); // truncate by a privileged caller
  });

  it('other requests and short reads ask nothing', () => {
    expect(killRequest(request(1, { 0: 0 }), 128)).toBeNull();
    expect(killRequest(request(16, { 20: 1 << 2 }), 60)).toBeNull();
  });
});

describe('clearedMode', () => {
  const plain = { uid: 1000, gid: 100, pid: 1, chown: false };
  const never = () => false;
  const always = () => true;
  it('set-user-ID always goes; set-group-ID goes with group execute', () => {
    expect(clearedMode(0o6777, 0, plain, always)).toBe(0o777);
    expect(clearedMode(0o4755, 0, plain, always)).toBe(0o755);
  });
  it('set-group-ID without group execute goes only for a caller outside the group, unless root chowns', () => {
    expect(clearedMode(0o6766, 0, plain, never)).toBe(0o766);
    expect(clearedMode(0o6766, 0, plain, always)).toBe(0o2766);
    expect(clearedMode(0o2766, 0, { ...plain, uid: 0, chown: true }, never)).toBe(0o2766);
    expect(clearedMode(0o2766, 0, { ...plain, chown: true }, never)).toBe(0o766);
  });
});
