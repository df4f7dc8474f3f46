/**
 * Prints a line when each test starts, so that when CI's overall timeout kills a hung suite, the log
 * names the test that was running (.ci/run greps for the marker).
 */
import type { Reporter, TestCase } from 'vitest/node';

export default class StartReporter implements Reporter {
  onTestCaseReady(test: TestCase): void {
    process.stderr.write(`▶ start ${test.module.moduleId.split('/test/')[1] ?? ''} › ${test.fullName}\n`);
  }
}
