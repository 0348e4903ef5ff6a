/**
 * The page library of the browser tests: open a notebook in JupyterLab, run it, wait for it,
 * read its cell errors, its figures and widgets, move a widget, take screenshots.
 * The helpers run in the browser through `window.jupyterapp` (exposed by Galata's server config)
 * and `window.__e2e` (installed here). Used by the specs in e2e/tests/.
 */
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';
import { SERVER_ROOT } from './select';

export const SCREENSHOTS = process.env.E2E_SCREENSHOTS || path.resolve(__dirname, '..', 'screenshots');
export const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';

/**
 * Galata options for every spec that drives JupyterLab: `test.use(LAB_OPTIONS)`.
 * Render every cell (no virtual scrolling), never save: the server root is a scratch copy anyway.
 */
export const LAB_OPTIONS = {
  autoGoto: true,
  serverFiles: 'off' as const,
  mockSettings: {
    ...galata.DEFAULT_SETTINGS,
    '@jupyterlab/notebook-extension:tracker': { windowingMode: 'none' },
    '@jupyterlab/docmanager-extension:plugin': { autosave: false }
  }
};

// ---------------------------------------------------------------------------------------
// Page helpers (run in the browser; `window.jupyterapp` is exposed by Galata's server config)
// ---------------------------------------------------------------------------------------

export interface CellError {
  cell: number;
  ename: string;
  evalue: string;
  traceback: string;
}

export interface RunState {
  found: boolean;
  kernel: string;
  code: number;
  pending: number;
  executing: number;
  errors: CellError[];
}

const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '');

/** Install window.__e2e: small helpers over the notebook *model* and the rendered page. */
export async function installHelpers(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    const w = window as any;
    if (w.__e2e) {
      return;
    }
    const panel = (p: string) => {
      for (const widget of w.jupyterapp.shell.widgets('main')) {
        if (widget.context && widget.context.path === p && widget.content && widget.content.model) {
          return widget;
        }
      }
      return null;
    };
    w.__e2e = {
      panel,
      state(p: string, upTo?: number) {
        const nb = panel(p);
        const res = { found: !!nb, kernel: 'none', code: 0, pending: 0, executing: 0, errors: [] as any[] };
        if (!nb) {
          return res;
        }
        const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
        res.kernel = kernel ? kernel.status : 'none';
        const cells = nb.content.model.cells;
        const last = upTo === undefined || upTo === null ? cells.length - 1 : upTo;
        for (let i = 0; i <= last; i++) {
          const cell = cells.get(i);
          if (cell.type !== 'code') {
            continue;
          }
          const json = cell.toJSON();
          const source = Array.isArray(json.source) ? json.source.join('') : json.source;
          if (!source.trim()) {
            continue;
          }
          res.code++;
          if (json.execution_count === null || json.execution_count === undefined) {
            res.pending++;
          }
          for (const out of json.outputs || []) {
            if (out.output_type === 'error') {
              res.errors.push({
                cell: i,
                ename: out.ename,
                evalue: out.evalue,
                traceback: (out.traceback || []).join('\n')
              });
            }
          }
        }
        // "[*]" prompts: cells queued or running in the page.
        res.executing = nb.content.node.querySelectorAll('.jp-InputPrompt').length
          ? Array.from(nb.content.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).filter(
              (e: any) => (e.textContent || '').includes('*')
            ).length
          : 0;
        return res;
      },
      /** Counts in the model vs. what rendered in the page. */
      outputs(p: string) {
        const nb = panel(p);
        const res = {
          cells: nb.content.model.cells.length,
          renderedCells: nb.content.node.querySelectorAll('.jp-Notebook-cell').length,
          modelImages: 0,
          modelWidgets: 0,
          images: 0,
          brokenImages: 0,
          widgetOutputs: 0,
          renderedWidgets: 0,
          closedWidgets: 0,
          widgetErrors: [] as string[],
          controls: 0
        };
        const cells = nb.content.model.cells;
        for (let i = 0; i < cells.length; i++) {
          const json = cells.get(i).toJSON();
          for (const out of json.outputs || []) {
            const data = out.data || {};
            if (data['image/png'] || data['image/jpeg'] || data['image/svg+xml']) {
              res.modelImages++;
            }
            if (data['application/vnd.jupyter.widget-view+json']) {
              res.modelWidgets++;
            }
          }
        }
        const node = nb.content.node as HTMLElement;
        const imgs = Array.from(node.querySelectorAll('.jp-OutputArea-output img')) as HTMLImageElement[];
        res.images = imgs.filter(img => img.complete && img.naturalWidth > 0).length;
        res.brokenImages = imgs.filter(img => img.complete && img.naturalWidth === 0).length;
        // Map each widget output of the model to the widget that renders it in the page.
        nb.content.widgets.forEach((cell: any) => {
          const area = cell.outputArea;
          if (!area) {
            return;
          }
          for (let j = 0; j < area.model.length; j++) {
            const data = area.model.get(j).data || {};
            if (!data['application/vnd.jupyter.widget-view+json']) {
              continue;
            }
            const shown = area.widgets[j];
            if (!shown) {
              continue;
            }
            res.widgetOutputs++;
            const el = shown.node as HTMLElement;
            const text = el.textContent || '';
            if (el.querySelector('.jupyter-widgets')) {
              res.renderedWidgets++;
            } else if (!text.trim() && !el.querySelector('img, canvas, svg, input, select, button')) {
              // A widget the code closed (a tqdm bar with leave=False): its view is gone, not broken.
              res.closedWidgets++;
            }
            if (/Error displaying widget|Loading widget|Failed to load model|model not found/i.test(text)) {
              res.widgetErrors.push(text.slice(0, 200));
            }
          }
        });
        res.controls = node.querySelectorAll(
          '.jp-OutputArea-output .widget-slider, .jp-OutputArea-output .widget-dropdown, ' +
            '.jp-OutputArea-output .widget-toggle-buttons, .jp-OutputArea-output .widget-radio-box, ' +
            '.jp-OutputArea-output .widget-checkbox, .jp-OutputArea-output .widget-select'
        ).length;
        return res;
      },
      /** Everything the outputs show, except inside the control being interacted with. */
      signature(p: string) {
        const nb = panel(p);
        const parts: string[] = [];
        for (const out of Array.from(nb.content.node.querySelectorAll('.jp-OutputArea-output')) as HTMLElement[]) {
          const clone = out.cloneNode(true) as HTMLElement;
          clone.querySelectorAll('[data-e2e-control]').forEach(e => e.remove());
          parts.push(clone.innerText || clone.textContent || '');
          clone.querySelectorAll('img').forEach(img => parts.push((img as HTMLImageElement).src.slice(-200)));
        }
        return parts.join('\n');
      }
    };
  });
}

/** What `window.__e2e.outputs` counts: the model's outputs vs. what rendered in the page. */
export interface OutputCounts {
  cells: number;
  renderedCells: number;
  modelImages: number;
  modelWidgets: number;
  images: number;
  brokenImages: number;
  widgetOutputs: number;
  renderedWidgets: number;
  closedWidgets: number;
  widgetErrors: string[];
  controls: number;
}

/** The outputs of an open notebook (after openNotebook, which installs the helpers). */
export async function readOutputs(page: IJupyterLabPageFixture, nbPath: string): Promise<OutputCounts> {
  return page.evaluate(p => (window as any).__e2e.outputs(p), nbPath);
}

/** Wait until the cells (up to `upTo`) have run and the kernel is idle, or a cell shows an error. */
export async function settle(page: IJupyterLabPageFixture, nbPath: string, what: string, upTo?: number): Promise<RunState> {
  let state: RunState;
  let stableSince = 0;
  for (;;) {
    state = await page.evaluate(([p, i]) => (window as any).__e2e.state(p, i), [nbPath, upTo] as [string, number | undefined]);
    if (!state.found) {
      throw new Error(`${nbPath} is not open any more`);
    }
    // "Run All" stops at the first error: fail at once instead of waiting forever.
    if (state.errors.length) {
      return state;
    }
    const done = state.pending === 0 && state.executing === 0 && state.kernel === 'idle';
    if (done) {
      stableSince = stableSince || Date.now();
      if (Date.now() - stableSince > 1500) {
        return state;
      }
    } else {
      stableSince = 0;
      if (state.kernel === 'dead' || state.kernel === 'unknown') {
        throw new Error(`kernel ${state.kernel} while ${what} ${nbPath}`);
      }
    }
    await page.waitForTimeout(300);
  }
}

export function describeErrors(nbPath: string, errors: CellError[]): string {
  return errors
    .map(e => `${nbPath}, cell ${e.cell}: ${e.ename}: ${e.evalue}\n${stripAnsi(e.traceback)}`)
    .join('\n\n');
}

/** Open a notebook (as the file browser would), accept a kernel dialog, wait for the kernel. */
export async function openNotebook(page: IJupyterLabPageFixture, nbPath: string): Promise<void> {
  await installHelpers(page);
  await page.evaluate(
    p => (window as any).jupyterapp.commands.execute('docmanager:open', { path: p, factory: 'Notebook' }),
    nbPath
  );
  await expect
    .poll(async () => {
      // A notebook whose kernelspec is missing here asks which kernel to use: take the default.
      const dialog = page.locator('.jp-Dialog');
      if (await dialog.count()) {
        await dialog.locator('button.jp-mod-accept').first().click();
      }
      return page.evaluate(p => !!(window as any).__e2e.panel(p), nbPath);
    }, { timeout: 60_000, message: `open ${nbPath}` })
    .toBe(true);
  await page.evaluate(async p => {
    const nb = (window as any).__e2e.panel(p);
    await nb.context.ready;
    await nb.sessionContext.ready;
    (window as any).jupyterapp.shell.activateById(nb.id);
  }, nbPath);
  await expect
    .poll(() => page.evaluate(p => (window as any).__e2e.state(p).kernel, nbPath), {
      timeout: 120_000,
      message: `kernel of ${nbPath} becomes idle`
    })
    .toBe('idle');
}

export async function screenshot(page: IJupyterLabPageFixture, nbPath: string, focus?: string): Promise<void> {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  if (focus) {
    const target = page.locator(focus).first();
    if (await target.count()) {
      await target.scrollIntoViewIfNeeded().catch(() => undefined);
    }
  }
  const name = nbPath.replace(/\.ipynb$/, '').replace(/[/\\]/g, '__');
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** Move the first interactive control and wait for something else in the outputs to change. */
export async function interactWithAWidget(page: IJupyterLabPageFixture, nbPath: string): Promise<string> {
  const outputs = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output');
  const slider = outputs.locator('.widget-slider').first();
  const dropdown = outputs.locator('.widget-dropdown').first();
  const checkbox = outputs.locator('.widget-checkbox').first();
  const toggles = outputs.locator('.widget-toggle-buttons').first();
  const radios = outputs.locator('.widget-radio-box').first(); // e.g. a self-check quiz question
  let control;
  let kind: string;
  if (await slider.count()) {
    control = slider;
    kind = 'slider';
  } else if (await dropdown.count()) {
    control = dropdown;
    kind = 'dropdown';
  } else if (await toggles.count()) {
    control = toggles;
    kind = 'toggle buttons';
  } else if (await radios.count()) {
    control = radios;
    kind = 'radio buttons';
  } else {
    control = checkbox;
    kind = 'checkbox';
  }
  await control.scrollIntoViewIfNeeded();
  await control.evaluate(e => e.setAttribute('data-e2e-control', '1'));
  const before = await page.evaluate(p => (window as any).__e2e.signature(p), nbPath);
  if (kind === 'slider') {
    const handle = control.locator('.noUi-handle').first();
    const readout = control.locator('.widget-readout').first();
    const value = await readout.textContent().catch(() => null);
    await handle.focus();
    await page.keyboard.press('ArrowRight');
    await page.waitForTimeout(300);
    if ((await readout.textContent().catch(() => null)) === value) {
      await page.keyboard.press('ArrowLeft'); // it was at its maximum
      await page.keyboard.press('ArrowLeft');
    }
  } else if (kind === 'dropdown') {
    const select = control.locator('select');
    const options = await select.locator('option').allTextContents();
    const current = await select.evaluate(e => (e as HTMLSelectElement).selectedIndex);
    expect(options.length, 'the dropdown has more than one option').toBeGreaterThan(1);
    await select.selectOption({ index: (current + 1) % options.length });
  } else if (kind === 'toggle buttons') {
    await control.locator('button:not(.mod-active)').first().click();
  } else if (kind === 'radio buttons') {
    await control.locator('input[type="radio"]').first().click(); // answers the question: feedback appears
  } else {
    await control.locator('input[type="checkbox"]').click();
  }
  await expect
    .poll(() => page.evaluate(p => (window as any).__e2e.signature(p), nbPath), {
      timeout: 60_000,
      message: `moving a ${kind} in ${nbPath} changes what the outputs show`
    })
    .not.toBe(before);
  await settle(page, nbPath, 'interacting with');
  return kind;
}

/**
 * Open a notebook, "Run All Cells", and check the page: no cell error, every figure and widget
 * rendered, one control moved (when there is one) changes the outputs; screenshots.
 */
export async function runNotebook(page: IJupyterLabPageFixture, nbPath: string): Promise<void> {
  const source = fs.readFileSync(path.join(SERVER_ROOT, nbPath), 'utf-8');
  const nbJson = JSON.parse(source);
  const codeSources: string[] = nbJson.cells
    .filter((c: any) => c.cell_type === 'code')
    .map((c: any) => (Array.isArray(c.source) ? c.source.join('') : c.source));
  const usesPlots = codeSources.some(s => /\bplt\.|matplotlib|\bplots\.|\bplot_\w+\(/.test(s));
  const usesWidgets = codeSources.some(s => /ipywidgets|\binteract\b/.test(s));
  // Progress bars (tqdm.auto, also inside tl_helpers' loops) are widgets too, often closed when done.
  const usesProgressBars = codeSources.some(s => /tqdm|train\.fit|\bfit\(|features\./.test(s));

  await openNotebook(page, nbPath);
  const started = Date.now();
  await page.menu.clickMenuItem('Run>Run All Cells');
  const state = await settle(page, nbPath, 'running');
  test.info().annotations.push({ type: 'run time', description: `${((Date.now() - started) / 1000).toFixed(1)} s` });
  if (state.errors.length) {
    await screenshot(page, nbPath, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  }
  expect(state.errors, describeErrors(nbPath, state.errors)).toEqual([]);
  expect(state.pending, 'every code cell ran').toBe(0);

  // Let outputs that arrive as comms (widgets) and images finish rendering.
  await expect
    .poll(async () => {
      const o = await page.evaluate(p => (window as any).__e2e.outputs(p), nbPath);
      return (
        o.images >= o.modelImages &&
        o.renderedWidgets + o.closedWidgets >= o.widgetOutputs
      );
    }, { timeout: 30_000, message: `outputs of ${nbPath} finish rendering` })
    .toBe(true)
    .catch(() => undefined); // the precise assertions below say what is missing
  const o = await page.evaluate(p => (window as any).__e2e.outputs(p), nbPath);
  const summary = `${o.images} figure(s), ${o.renderedWidgets} widget(s) (+${o.closedWidgets} closed), ${o.controls} control(s)`;
  test.info().annotations.push({ type: 'outputs', description: summary });
  console.log(`${nbPath}: ran in ${((Date.now() - started) / 1000).toFixed(1)} s; ${summary}`);

  expect(o.renderedCells, 'every cell is in the page').toBe(o.cells);
  // Figures: every image output in the model is an <img> that decoded.
  expect(o.brokenImages, 'no broken images').toBe(0);
  expect(o.images, 'every figure rendered').toBeGreaterThanOrEqual(o.modelImages);
  if (usesPlots) {
    expect(o.images, `${nbPath} plots, so at least one figure shows`).toBeGreaterThan(0);
  }
  // Widgets: every widget output rendered as a widget, none shows an error.
  expect(o.widgetErrors, 'widgets that failed to render').toEqual([]);
  expect(o.widgetOutputs, 'every widget output in the model is in the page').toBe(o.modelWidgets);
  expect(o.renderedWidgets + o.closedWidgets, 'every widget rendered (or was closed by the code)').toBe(
    o.widgetOutputs
  );
  if (usesWidgets) {
    expect(o.renderedWidgets, `${nbPath} uses ipywidgets, so at least one stays rendered`).toBeGreaterThan(0);
  }
  if (usesProgressBars) {
    expect(o.renderedWidgets + o.closedWidgets, `${nbPath} shows progress bars, so some widget appeared`)
      .toBeGreaterThan(0);
  }
  if (o.controls > 0) {
    const kind = await interactWithAWidget(page, nbPath);
    test.info().annotations.push({ type: 'interaction', description: `a ${kind} updated the output` });
    console.log(`${nbPath}: moving a ${kind} updated the output`);
    await screenshot(page, `${nbPath.replace(/\.ipynb$/, '')}__widget`); // the control is in view
    const after = await page.evaluate(p => (window as any).__e2e.state(p), nbPath);
    expect(after.errors, describeErrors(nbPath, after.errors)).toEqual([]);
  }
  // The main screenshot shows the first figure (else the first widget).
  await screenshot(page, nbPath, o.images ? '.jp-OutputArea-output img' : '.jp-OutputArea-output .jupyter-widgets');
}
