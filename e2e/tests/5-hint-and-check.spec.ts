/**
 * A learner in exercise 03 (freezing): asks for a hint, writes the freezing by hand, and the check passes.
 *
 * The cell is found by its check call (`check("freeze_backbone", model)`), not by position; the stub
 * is the last cell above it that raises NotImplementedError. The answer is generic by-hand freezing
 * (every parameter but the classifier's stops requiring gradients), typed in place of the stub's two
 * lines, after a `hint("freeze_backbone")` call whose first step must render. The notebook:
 * E2E_HINT_EXERCISE, default exercises/03_freezing_exercises.ipynb.
 *
 * Start it with `make e2e E2E_ARGS="tests/5-hint-and-check.spec.ts"` (e2e/run.sh starts JupyterLab).
 */
import { expect, test } from '@jupyterlab/galata';
import { describeErrors, LAB_OPTIONS, openNotebook, screenshot, settle } from '../lib/jupyter';
import { cellSource, readNb } from '../lib/select';

test.use(LAB_OPTIONS);

const NOTEBOOK = process.env.E2E_HINT_EXERCISE || 'exercises/03_freezing_exercises.ipynb';
/** The exercise's one id: its `check(...)`, its `hint(...)` and its `# EXERCISE:` line in solutions/03. */
const EXERCISE = 'freeze_backbone';
const CHECK = EXERCISE;
const ANSWER = [
  'from tl_helpers.checks import hint',
  '',
  `hint("${EXERCISE}")`,
  'for n, p in model.named_parameters():',
  '    p.requires_grad = n.startswith("classifier")'
];

/** The cell source with its `# YOUR CODE HERE` + `raise NotImplementedError(...)` stub replaced by `lines`. */
function answerInPlaceOfStub(source: string, lines: string[]): string {
  const out: string[] = [];
  const src = source.split('\n');
  for (let i = 0; i < src.length; i++) {
    const line = src[i];
    const stub = /^(\s*)raise NotImplementedError/.exec(line);
    if (stub) {
      if (out.length && /^\s*# YOUR CODE HERE\s*$/.test(out[out.length - 1])) {
        out.pop();
      }
      out.push(...lines.map(l => (l ? stub[1] + l : l)));
    } else {
      out.push(line);
    }
  }
  return out.join('\n');
}

test(`exercise 03: hint("${EXERCISE}") shows its first step, and by-hand freezing passes the check`, async ({
  page
}) => {
  const nb = readNb(NOTEBOOK);
  const checkCall = new RegExp(`\\bcheck\\(\\s*["']${CHECK}["']`);
  const checkIndex = nb.cells.findIndex((c: any) => c.cell_type === 'code' && checkCall.test(cellSource(c)));
  expect(checkIndex, `${NOTEBOOK} has a cell calling check("${CHECK}", ...)`).toBeGreaterThan(0);
  let stubIndex = checkIndex - 1;
  while (stubIndex >= 0 && !/raise NotImplementedError/.test(cellSource(nb.cells[stubIndex]))) {
    stubIndex--;
  }
  expect(stubIndex, `a stub raising NotImplementedError above the ${CHECK} check`).toBeGreaterThanOrEqual(0);
  const earlierStubs = nb.cells
    .slice(0, stubIndex)
    .filter((c: any) => c.cell_type === 'code' && /raise NotImplementedError/.test(cellSource(c)));
  expect(earlierStubs.length, `${EXERCISE} is the first exercise of ${NOTEBOOK}`).toBe(0);
  const answer = answerInPlaceOfStub(cellSource(nb.cells[stubIndex]), ANSWER);
  expect(answer).not.toMatch(/NotImplementedError/);

  await openNotebook(page, NOTEBOOK);

  // Type the answer into the stub cell, as a learner would.
  await page.evaluate(
    ([p, i]) => {
      const panel = (window as any).__e2e.panel(p);
      panel.content.activeCellIndex = i;
      panel.content.mode = 'edit';
    },
    [NOTEBOOK, stubIndex] as [string, number]
  );
  const cells = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-cell');
  await cells.nth(stubIndex).locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.insertText(answer);
  await expect
    .poll(() =>
      page.evaluate(
        ([p, i]) => (window as any).__e2e.panel(p).content.model.cells.get(i).sharedModel.getSource(),
        [NOTEBOOK, stubIndex] as [string, number]
      )
    )
    .toBe(answer);

  // Run every cell above the check, then the check itself.
  await page.evaluate(
    ([p, i]) => {
      const panel = (window as any).__e2e.panel(p);
      panel.content.mode = 'command';
      panel.content.activeCellIndex = i;
    },
    [NOTEBOOK, checkIndex] as [string, number]
  );
  await page.evaluate(async () => {
    const commands = (window as any).jupyterapp.commands;
    await commands.execute('notebook:run-all-above');
    await commands.execute('notebook:run-cell');
  });
  const state = await settle(page, NOTEBOOK, 'hint and check', checkIndex);
  const upToCheck = state.errors.filter(e => e.cell <= checkIndex);
  expect(upToCheck, describeErrors(NOTEBOOK, upToCheck)).toEqual([]);

  // The hint, as rendered: step 1 of 3 (the idea), with its text.
  const hintOutput = cells.nth(stubIndex).locator('.jp-OutputArea-output');
  const hintText = hintOutput.filter({ hasText: `${EXERCISE}, hint 1/3` }).first();
  await expect(hintText).toBeVisible();
  const shown = await hintText.innerText();
  const idea = shown.split('\n').slice(1).join(' ').trim();
  expect(idea.length, `the hint's first step has text: ${shown}`).toBeGreaterThan(10);

  // The check, as rendered: ✅, no ❌.
  const feedback = cells.nth(checkIndex).locator('.jp-OutputArea-output');
  await expect(feedback.filter({ hasText: new RegExp(`✅ ${CHECK}`) }).first()).toBeVisible();
  await expect(feedback.filter({ hasText: /❌/ })).toHaveCount(0);
  test.info().annotations.push({ type: 'hint', description: shown.slice(0, 200) });
  test.info().annotations.push({ type: 'feedback', description: (await feedback.first().innerText()).slice(0, 200) });
  await feedback.first().scrollIntoViewIfNeeded();
  await screenshot(page, `hint_and_check__${EXERCISE}`);
});
