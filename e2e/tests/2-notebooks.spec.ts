/**
 * The course, as learners meet it: each selected notebook opened in JupyterLab in a real
 * browser, run with "Run All Cells", and checked in the page: no errors, widgets rendered (and
 * one reacting to an interaction), figures shown; one screenshot per notebook. The other
 * notebooks are opened and checked to render. Which ones: E2E_NOTEBOOKS / E2E_OPEN_ONLY, see
 * e2e/lib/select.ts (default: LIGHT_NOTEBOOKS run, the rest of notebooks/ opened).
 *
 * Start it with `make e2e` (e2e/run.sh starts JupyterLab on a copy of the course).
 */
import { expect, test } from '@jupyterlab/galata';
import { LAB_OPTIONS, openNotebook, readOutputs, runNotebook, screenshot } from '../lib/jupyter';
import { LIGHT_NOTEBOOKS, selectNotebooks } from '../lib/select';

const SELECTED = selectNotebooks();

test.use(LAB_OPTIONS);

test.describe('course notebooks, run in the browser', () => {
  if (SELECTED.run.length === 0) {
    test('no course notebook selected to run', async () => {
      test.skip(true, `no notebook in notebooks/ matches ${process.env.E2E_NOTEBOOKS || LIGHT_NOTEBOOKS.join(' ')}`);
    });
  }
  for (const nbPath of SELECTED.run) {
    test(`runs ${nbPath}`, async ({ page }) => {
      await runNotebook(page, nbPath);
    });
  }
});

test.describe('course notebooks, opened only (run by `make test`; E2E_NOTEBOOKS=all runs them here)', () => {
  for (const nbPath of SELECTED.openOnly) {
    test(`opens ${nbPath}`, async ({ page }) => {
      test.setTimeout(180_000);
      await openNotebook(page, nbPath);
      const o = await readOutputs(page, nbPath);
      expect(o.cells, 'the notebook has cells').toBeGreaterThan(0);
      expect(o.renderedCells, 'every cell is in the page').toBe(o.cells);
      // Markdown rendered (not left as source), and no cell is shown as an error.
      const panel = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden)');
      const markdownCells = panel.locator('.jp-MarkdownCell');
      if (await markdownCells.count()) {
        await expect(panel.locator('.jp-MarkdownCell .jp-RenderedMarkdown').first()).toBeVisible();
      }
      await screenshot(page, nbPath);
    });
  }
});
