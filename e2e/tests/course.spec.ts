/**
 * The course, as learners meet it: each notebook opened in JupyterLab in a real browser,
 * run with "Run All Cells", and checked in the page: no errors, widgets rendered (and one
 * reacting to an interaction), figures shown; one screenshot per notebook. One more test
 * fills in an exercise and sees the "passed" feedback.
 *
 * Start it with `make e2e` (e2e/run.sh starts JupyterLab on a copy of the course).
 *
 * Which notebooks run (read at run time, so new notebooks are picked up):
 *   - E2E_NOTEBOOKS unset: the notebooks in notebooks/ whose name starts with one of
 *     LIGHT_NOTEBOOKS run in full; every other notebook in notebooks/ is opened and
 *     checked to render (they are executed by `make test` through nbval anyway).
 *   - E2E_NOTEBOOKS="all": every notebook in notebooks/ runs in full.
 *   - E2E_NOTEBOOKS="<glob or prefix>[,<glob or prefix>...]": those run in full, e.g.
 *     "notebooks/0[0-4]*.ipynb", "05,06" or "solutions/03*" (globs are relative to the repo;
 *     a bare prefix matches notebook names in notebooks/, exercises/, solutions/).
 *   - E2E_OPEN_ONLY: the same syntax, for the notebooks only opened (default: the rest of
 *     notebooks/; "" for none).
 * The harness's own fixture (e2e/fixtures/smoke.ipynb: a plot, a slider, a tqdm bar)
 * always runs first, so a broken front end is told apart from a broken notebook.
 */
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

/** Notebooks light enough to run in the browser on every CI run (name prefixes). Edit freely. */
export const LIGHT_NOTEBOOKS = ['00_', '01_', '03_', '04_', '05_', '07_', '08_'];

const REPO = process.env.E2E_REPO || path.resolve(__dirname, '..', '..');
const SERVER_ROOT = process.env.E2E_ROOT_DIR || REPO;
const SCREENSHOTS = process.env.E2E_SCREENSHOTS || path.resolve(__dirname, '..', 'screenshots');
const SMOKE = 'e2e/fixtures/smoke.ipynb';
const EXERCISE_FIXTURE = 'e2e/fixtures/exercise.ipynb';
const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';

// ---------------------------------------------------------------------------------------
// Which notebooks
// ---------------------------------------------------------------------------------------

function listNotebooks(dir: string): string[] {
  const abs = path.join(SERVER_ROOT, dir);
  if (!fs.existsSync(abs)) {
    return [];
  }
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(SERVER_ROOT, rel), { withFileTypes: true })) {
      const child = path.posix.join(rel, entry.name);
      if (entry.isDirectory() && !entry.name.startsWith('.')) {
        walk(child);
      } else if (entry.isFile() && entry.name.endsWith('.ipynb')) {
        out.push(child);
      }
    }
  };
  walk(dir);
  return out.sort();
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') {
      re += '[^/]*';
    } else if (ch === '?') {
      re += '[^/]';
    } else if (ch === '[') {
      const end = glob.indexOf(']', i);
      re += end > i ? glob.slice(i, end + 1) : '\\[';
      i = end > i ? end : i;
    } else {
      re += ch.replace(/[.+^${}()|\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

/** A pattern matches a repo-relative path (glob), or a notebook name prefix ("00", "05_fine"). */
function matches(pattern: string, file: string): boolean {
  if (/[*?[/]/.test(pattern)) {
    return globToRegExp(pattern).test(file);
  }
  return path.posix.basename(file).startsWith(pattern);
}

function selectNotebooks(): { run: string[]; openOnly: string[] } {
  const course = listNotebooks('notebooks');
  const spec = (process.env.E2E_NOTEBOOKS || '').trim();
  let run: string[];
  if (!spec) {
    run = course.filter(f => LIGHT_NOTEBOOKS.some(p => path.posix.basename(f).startsWith(p)));
  } else if (spec === 'all') {
    run = course;
  } else {
    const patterns = spec.split(/[\s,]+/).filter(Boolean);
    const candidates = [
      ...course,
      ...listNotebooks('exercises'),
      ...listNotebooks('solutions'),
      ...listNotebooks('e2e/fixtures')
    ];
    run = candidates.filter(f => patterns.some(p => matches(p, f)));
    if (run.length === 0) {
      throw new Error(`E2E_NOTEBOOKS=${spec} matches no notebook in ${candidates.join(', ')}`);
    }
  }
  run = run.filter(f => f !== SMOKE);
  const openSpec = process.env.E2E_OPEN_ONLY;
  if (openSpec !== undefined) {
    const patterns = openSpec.split(/[\s,]+/).filter(Boolean);
    const all = ['notebooks', 'exercises', 'solutions', 'e2e/fixtures'].flatMap(listNotebooks);
    return { run, openOnly: all.filter(f => !run.includes(f) && patterns.some(p => matches(p, f))) };
  }
  return { run, openOnly: course.filter(f => !run.includes(f)) };
}

const SELECTED = selectNotebooks();

// ---------------------------------------------------------------------------------------
// Page helpers (run in the browser; `window.jupyterapp` is exposed by Galata's server config)
// ---------------------------------------------------------------------------------------

interface CellError {
  cell: number;
  ename: string;
  evalue: string;
  traceback: string;
}

interface RunState {
  found: boolean;
  kernel: string;
  code: number;
  pending: number;
  executing: number;
  errors: CellError[];
}

const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '');

/** Install window.__e2e: small helpers over the notebook *model* and the rendered page. */
async function installHelpers(page: IJupyterLabPageFixture): Promise<void> {
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

/** Wait until the cells (up to `upTo`) have run and the kernel is idle, or a cell shows an error. */
async function settle(page: IJupyterLabPageFixture, nbPath: string, what: string, upTo?: number): Promise<RunState> {
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

function describeErrors(nbPath: string, errors: CellError[]): string {
  return errors
    .map(e => `${nbPath}, cell ${e.cell}: ${e.ename}: ${e.evalue}\n${stripAnsi(e.traceback)}`)
    .join('\n\n');
}

/** Open a notebook (as the file browser would), accept a kernel dialog, wait for the kernel. */
async function openNotebook(page: IJupyterLabPageFixture, nbPath: string): Promise<void> {
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

async function screenshot(page: IJupyterLabPageFixture, nbPath: string, focus?: string): Promise<void> {
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
async function interactWithAWidget(page: IJupyterLabPageFixture, nbPath: string): Promise<string> {
  const outputs = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output');
  const slider = outputs.locator('.widget-slider').first();
  const dropdown = outputs.locator('.widget-dropdown').first();
  const checkbox = outputs.locator('.widget-checkbox').first();
  const toggles = outputs.locator('.widget-toggle-buttons').first();
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

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

test.use({
  autoGoto: true,
  serverFiles: 'off',
  mockSettings: {
    ...galata.DEFAULT_SETTINGS,
    // Render every cell (no virtual scrolling), never save: the server root is a scratch copy anyway.
    '@jupyterlab/notebook-extension:tracker': { windowingMode: 'none' },
    '@jupyterlab/docmanager-extension:plugin': { autosave: false }
  }
});

async function runNotebook(page: IJupyterLabPageFixture, nbPath: string): Promise<void> {
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

test.describe('the front end itself', () => {
  test(`runs ${SMOKE}: a figure, a slider that reacts, a tqdm bar`, async ({ page }) => {
    await runNotebook(page, SMOKE);
    const o = await page.evaluate(p => (window as any).__e2e.outputs(p), SMOKE);
    expect(o.images).toBeGreaterThanOrEqual(1);
    expect(o.controls).toBeGreaterThanOrEqual(1);
    await expect(page.locator('.jp-OutputArea-output .widget-hprogress').first()).toBeVisible();
  });
});

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
      const o = await page.evaluate(p => (window as any).__e2e.outputs(p), nbPath);
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

// ---------------------------------------------------------------------------------------
// Exercise: fill in the stub, run its check, see "passed"
// ---------------------------------------------------------------------------------------

interface ExerciseChoice {
  exercise: string;
  solution: string;
}

const cellSource = (c: any): string => (Array.isArray(c.source) ? c.source.join('') : c.source);
const readNb = (rel: string) => JSON.parse(fs.readFileSync(path.join(SERVER_ROOT, rel), 'utf-8'));

function solutionFor(exercise: string): string {
  if (exercise === EXERCISE_FIXTURE) {
    return 'e2e/fixtures/exercise_solution.ipynb';
  }
  return exercise.replace(/^exercises\//, 'solutions/');
}

function isUsableExercise(rel: string): boolean {
  try {
    const nb = readNb(rel);
    const solution = solutionFor(rel);
    if (!fs.existsSync(path.join(SERVER_ROOT, solution))) {
      return false;
    }
    const code = (c: any) => (c.cell_type === 'code' ? cellSource(c) : '');
    const cells = nb.cells.map(code);
    const stub = cells.findIndex((s: string) => /raise NotImplementedError/.test(s));
    return stub >= 0 && cells.slice(stub + 1).some((s: string) => /\bcheck\s*\(/.test(s));
  } catch {
    return false;
  }
}

function chooseExercise(): ExerciseChoice {
  let exercise = process.env.E2E_EXERCISE;
  if (!exercise) {
    const all = listNotebooks('exercises').filter(isUsableExercise);
    const light = all.filter(f => LIGHT_NOTEBOOKS.some(p => path.posix.basename(f).startsWith(p)));
    exercise = light[0] || all[0] || EXERCISE_FIXTURE;
  }
  return { exercise, solution: solutionFor(exercise) };
}

test('an exercise: a correct answer makes its check say "passed"', async ({ page }) => {
  const { exercise, solution } = chooseExercise();
  test.info().annotations.push({ type: 'exercise', description: `${exercise} (answer from ${solution})` });
  const ex = readNb(exercise);
  const sol = readNb(solution);
  const stubIndex = ex.cells.findIndex(
    (c: any) => c.cell_type === 'code' && /raise NotImplementedError/.test(cellSource(c))
  );
  expect(stubIndex, `${exercise} has a stub raising NotImplementedError`).toBeGreaterThanOrEqual(0);
  // The check cells that follow the stub (one exercise may have several checks).
  const isCheck = (c: any) => c && c.cell_type === 'code' && /\bcheck\s*\(/.test(cellSource(c));
  const firstCheck = ex.cells.findIndex((c: any, i: number) => i > stubIndex && isCheck(c));
  expect(firstCheck, `${exercise} has a check cell after the stub`).toBeGreaterThan(stubIndex);
  let checkIndex = firstCheck;
  while (isCheck(ex.cells[checkIndex + 1])) {
    checkIndex++;
  }
  // The answer: the solution's cell with the same id (else the same position).
  const stubId = ex.cells[stubIndex].id;
  const answerCell =
    (stubId && sol.cells.find((c: any) => c.id === stubId)) ||
    (sol.cells.length === ex.cells.length ? sol.cells[stubIndex] : undefined);
  expect(answerCell, `${solution} has the answer to cell ${stubIndex}`).toBeTruthy();
  const answer = cellSource(answerCell);
  expect(answer).not.toMatch(/raise NotImplementedError/);

  await openNotebook(page, exercise);

  // Type the answer into the stub cell as a learner would (replace the stub's text).
  await page.evaluate(
    ([p, i]) => {
      const nb = (window as any).__e2e.panel(p);
      nb.content.activeCellIndex = i;
      nb.content.mode = 'edit';
    },
    [exercise, stubIndex] as [string, number]
  );
  const editor = page
    .locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-cell')
    .nth(stubIndex)
    .locator('.cm-content');
  await editor.click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.insertText(answer);
  await expect
    .poll(() =>
      page.evaluate(
        ([p, i]) => (window as any).__e2e.panel(p).content.model.cells.get(i).sharedModel.getSource(),
        [exercise, stubIndex] as [string, number]
      )
    )
    .toBe(answer);

  // Run everything up to and including the check cell (later stubs are still unsolved).
  await page.evaluate(
    ([p, i]) => {
      const nb = (window as any).__e2e.panel(p);
      nb.content.mode = 'command';
      nb.content.activeCellIndex = i;
    },
    [exercise, checkIndex] as [string, number]
  );
  await page.evaluate(async () => {
    const commands = (window as any).jupyterapp.commands;
    await commands.execute('notebook:run-all-above');
    await commands.execute('notebook:run-cell');
  });
  const state = await settle(page, exercise, 'checking', checkIndex);
  const upToCheck = state.errors.filter(e => e.cell <= checkIndex);
  expect(upToCheck, describeErrors(exercise, upToCheck)).toEqual([]);

  for (let i = firstCheck; i <= checkIndex; i++) {
    const feedback = page
      .locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-cell')
      .nth(i)
      .locator('.jp-OutputArea-output');
    // The feedback, as rendered: ✅ / "passed", and no ❌.
    await expect(feedback.filter({ hasText: /✅|\bpassed\b/i }).first()).toBeVisible();
    await expect(feedback.filter({ hasText: /❌/ })).toHaveCount(0);
    await feedback.first().scrollIntoViewIfNeeded();
    test.info().annotations.push({ type: 'feedback', description: (await feedback.first().innerText()).slice(0, 200) });
  }
  await screenshot(page, `exercise__${path.posix.basename(exercise)}`);
});
