/**
 * Playwright configuration for the end-to-end tests (run them with `make e2e`, or
 * `e2e/run.sh`, which starts JupyterLab and sets the E2E_* variables used here).
 */
import { defineConfig } from '@playwright/test';
// eslint-disable-next-line @typescript-eslint/no-var-requires
const galataConfig = require('@jupyterlab/galata/lib/playwright-config');

const port = process.env.E2E_PORT;
const token = process.env.E2E_TOKEN;
if (!port || !token) {
  throw new Error('E2E_PORT / E2E_TOKEN are not set: run the tests with `make e2e` (e2e/run.sh).');
}
// A notebook may take a while on a 2-core CPU; the exercise and render checks are quick.
const notebookTimeout = Number(process.env.E2E_NOTEBOOK_TIMEOUT || 1200) * 1000;

export default defineConfig({
  ...galataConfig,
  testDir: './tests',
  outputDir: './test-results',
  timeout: notebookTimeout,
  expect: { timeout: 30_000 },
  workers: 1, // one kernel at a time: the machines have 2 cores
  fullyParallel: false,
  retries: 0,
  forbidOnly: !!process.env.CI,
  reporter: [['list'], ['html', { open: 'never', outputFolder: './playwright-report' }]],
  use: {
    ...galataConfig.use,
    baseURL: `http://127.0.0.1:${port}`,
    extraHTTPHeaders: { Authorization: `token ${token}` },
    viewport: { width: 1280, height: 1000 },
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    },
    // No video (it needs Playwright's own ffmpeg download); a trace and a screenshot on failure.
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    actionTimeout: 30_000,
    navigationTimeout: 60_000
  }
});
