// Runs in every test file: its scratch directories go after the file's own afterAll hooks (after hooks run in
// reverse order of registration, and this one is registered first).
import { afterAll } from 'vitest';
import { removeScratchDirs } from './scratch.js';

afterAll(removeScratchDirs);
