/**
 * The front end itself, before any course notebook: the harness's own fixture
 * (e2e/fixtures/smoke.ipynb: a plot, a slider, a tqdm bar) runs first (this file sorts first),
 * so a broken front end is told apart from a broken notebook.
 *
 * Start it with `make e2e` (e2e/run.sh starts JupyterLab on a copy of the course).
 */
import { expect, test } from '@jupyterlab/galata';
import { LAB_OPTIONS, readOutputs, runNotebook } from '../lib/jupyter';
import { SMOKE } from '../lib/select';

test.use(LAB_OPTIONS);

test.describe('the front end itself', () => {
  test(`runs ${SMOKE}: a figure, a slider that reacts, a tqdm bar`, async ({ page }) => {
    await runNotebook(page, SMOKE);
    const o = await readOutputs(page, SMOKE);
    expect(o.images).toBeGreaterThanOrEqual(1);
    expect(o.controls).toBeGreaterThanOrEqual(1);
    await expect(page.locator('.jp-OutputArea-output .widget-hprogress').first()).toBeVisible();
  });
});
