/**
 * Playwright configuration for the course site's browser check (`make site-check`, which runs
 * e2e/site.sh: it serves site/ on 127.0.0.1 and sets SITE_URL). Separate from the JupyterLab
 * tests (playwright.config.ts, tests/): no JupyterLab, no Galata.
 */
import { defineConfig } from '@playwright/test';

const baseURL = process.env.SITE_URL;
if (!baseURL) {
  throw new Error('SITE_URL is not set: run the site check with `make site-check` (e2e/site.sh).');
}

export default defineConfig({
  testDir: './site-tests',
  outputDir: './test-results/site',
  timeout: 120_000,
  expect: { timeout: 15_000 },
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  reporter: [['list']],
  use: {
    baseURL,
    viewport: { width: 1280, height: 1000 },
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run']
    },
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure'
  }
});
