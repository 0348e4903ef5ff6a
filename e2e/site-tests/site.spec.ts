/**
 * The static course site (built by `make site` into site/), as a reader meets it, served from
 * 127.0.0.1 with no other network: the index and two notebook pages open in Chromium, every
 * figure on them is decoded, every page carries its title, the credits and the date and device
 * its outputs came from, nothing is requested from another host, and no link on any page of the
 * site points to a missing page or file.
 *
 * SITE_PAGES: name prefixes of the two notebook pages to open (default "01_,02_").
 */
import { expect, Page, test } from '@playwright/test';

const PAGE_PREFIXES = (process.env.SITE_PAGES || '01_,02_').split(',').map(s => s.trim()).filter(Boolean);

/** Opens a page, recording every request that leaves 127.0.0.1. */
async function open(page: Page, url: string): Promise<string[]> {
  const external: string[] = [];
  page.on('request', req => {
    const u = new URL(req.url());
    if (!['127.0.0.1', 'localhost'].includes(u.hostname) && !['data:', 'blob:'].includes(u.protocol)) {
      external.push(req.url());
    }
  });
  const response = await page.goto(url, { waitUntil: 'load' });
  expect(response?.status(), url).toBe(200);
  await page.waitForLoadState('networkidle');
  return external;
}

/** Every <img> in the page's content has loaded and decoded (naturalWidth > 0); returns how many. */
async function checkFigures(page: Page): Promise<number> {
  const images = page.locator('article img');
  const n = await images.count();
  for (let i = 0; i < n; i++) {
    const img = images.nth(i);
    await img.scrollIntoViewIfNeeded();
    await expect
      .poll(() => img.evaluate((el: HTMLImageElement) => el.complete && el.naturalWidth > 0), {
        message: `figure ${i} (${await img.getAttribute('src')}) decodes`
      })
      .toBe(true);
  }
  return n;
}

async function checkCommonParts(page: Page, provenance: RegExp): Promise<void> {
  expect((await page.title()).trim().length).toBeGreaterThan(0);
  await expect(page.locator('article h1').first()).toBeVisible();
  const text = await page.locator('article').innerText();
  expect(text).toMatch(/EuroSAT/);
  expect(text).toMatch(/Helber/);
  expect(text).toMatch(/MIT licence/);
  expect(text).toMatch(/weights[^.]*Apache-2\.0/);
  expect(text).toMatch(provenance);
  expect(text).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d UTC on .*torch \d/);
}

let notebookPages: string[] = [];

test('index: course map, credits, build date and device; links to every notebook', async ({ page, baseURL }) => {
  const external = await open(page, '/');
  await checkCommonParts(page, /Site built/);
  await expect(page.getByRole('heading', { name: 'Course map' })).toBeVisible();
  const hrefs = await page.locator('article table a').evaluateAll(as => as.map(a => (a as HTMLAnchorElement).href));
  notebookPages = hrefs.filter(h => /\/notebooks\/[^/]+\.html$/.test(h));
  expect(notebookPages.length, 'notebook pages in the course map').toBeGreaterThanOrEqual(2);
  await checkFigures(page);
  expect(external, 'requests to other hosts').toEqual([]);
  await page.screenshot({ path: 'test-results/site/index.png', fullPage: false });
  void baseURL;
});

for (const prefix of PAGE_PREFIXES) {
  test(`notebook page ${prefix}*: figures render, title, credits, date and device`, async ({ page }) => {
    if (notebookPages.length === 0) {
      await open(page, '/');
      const hrefs = await page.locator('article table a').evaluateAll(as => as.map(a => (a as HTMLAnchorElement).href));
      notebookPages = hrefs.filter(h => /\/notebooks\/[^/]+\.html$/.test(h));
    }
    const url = notebookPages.find(h => h.split('/').pop()!.startsWith(prefix));
    expect(url, `a page for notebooks/${prefix}* in the course map`).toBeTruthy();
    const external = await open(page, url!);
    await checkCommonParts(page, /Outputs on this page: computed/);
    const figures = await checkFigures(page);
    expect(figures, 'figures on the page').toBeGreaterThan(0);
    // Executed outputs are there: at least one code cell shows output.
    expect(await page.locator('.cell_output').count()).toBeGreaterThan(0);
    expect(external, 'requests to other hosts').toEqual([]);
    await page.screenshot({ path: `test-results/site/${prefix}page.png`, fullPage: false });
  });
}

test('no page of the site links to a missing page or file', async ({ request, baseURL }) => {
  const origin = new URL(baseURL!).origin;
  const toVisit = [new URL('/', baseURL).href];
  const seen = new Set<string>();
  const checked = new Map<string, number>();
  const broken: string[] = [];
  while (toVisit.length) {
    const pageUrl = toVisit.pop()!;
    if (seen.has(pageUrl)) continue;
    seen.add(pageUrl);
    const res = await request.get(pageUrl);
    if (res.status() !== 200) {
      broken.push(`${pageUrl} -> ${res.status()}`);
      continue;
    }
    const html = await res.text();
    for (const m of html.matchAll(/\s(?:href|src)="([^"]+)"/g)) {
      const raw = m[1].replace(/&amp;/g, '&');
      if (/^(mailto:|javascript:|data:)/.test(raw) || raw.startsWith('#')) continue;
      const target = new URL(raw, pageUrl);
      if (target.origin !== origin) continue; // external links are allowed (none are loaded)
      target.hash = '';
      target.search = '';
      const key = target.href;
      if (!checked.has(key)) {
        const r = await request.get(key);
        checked.set(key, r.status());
        if (r.status() === 200 && (key.endsWith('.html') || key.endsWith('/'))) toVisit.push(key);
      }
      if (checked.get(key) !== 200) broken.push(`${pageUrl}: ${raw} -> ${checked.get(key)}`);
    }
  }
  expect(seen.size, 'pages crawled').toBeGreaterThan(3);
  expect(broken, 'broken links').toEqual([]);
});
